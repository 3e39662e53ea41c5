"""GraphQL errors carrying the API's error model.

Every error of a response has `extensions` with the same content as the REST JSON error's
google.rpc.Status: `code` (the gRPC canonical name), `reason` (ErrorInfo), `metadata` and
`fieldViolations` (BadRequest), plus `traceId`:

- a failing API call: its `ApiError` (the resolver's field is null, the error has its path);
- a document that does not parse or validate, or a refused limit (depth, tokens, cost):
  INVALID_ARGUMENT with one violation of the field `query`;
- anything else: INTERNAL with the trace id, the exception logged, never shown.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from withdrawal_shared.errors import ApiError, FieldViolation, invalid_argument
from withdrawal_shared.logs import trace_id_var
from withdrawal_shared.unexpected import answer_for, log_unexpected

log = logging.getLogger(__name__)

QUERY_FIELD = "query"
"""How violations name the GraphQL document."""


def extensions(err: ApiError) -> dict[str, Any]:
    return {
        "code": err.code.name,
        "reason": err.reason,
        "metadata": dict(err.metadata),
        "fieldViolations": [
            {"field": v.field, "description": v.description} for v in err.field_violations
        ],
        "traceId": trace_id_var.get(),
    }


def body(err: ApiError) -> dict[str, Any]:
    """A whole response holding only `err` (a request refused before execution)."""
    return {"errors": [{"message": err.message, "extensions": extensions(err)}]}


def query_error(description: str) -> ApiError:
    """INVALID_ARGUMENT about the document itself."""
    return invalid_argument([FieldViolation(QUERY_FIELD, description)])


def api_error_of(error: GraphQLError) -> ApiError:
    """The API error a GraphQL error stands for."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original
    if original is None or isinstance(original, GraphQLError):
        # Parsing, validation, variable coercion or a limit: about the caller's document.
        return query_error(error.message)
    return answer_for(original, trace_id_var.get())  # log_errors logs it


def log_errors(errors: list[GraphQLError]) -> None:
    """One line per error; an unexpected exception with its stack (in the log only), a
    transient database failure as a warning (`withdrawal_shared.unexpected`)."""
    for error in errors:
        original = error.original_error
        path = ".".join(str(p) for p in error.path or ())
        if isinstance(original, ApiError):
            log.info(
                "graphql field refused",
                extra={"path": path, "code": original.code.name, "reason": original.reason},
            )
        elif original is None or isinstance(original, GraphQLError):
            log.info("graphql document refused", extra={"error": error.message})
        else:
            log_unexpected(original, trace_id_var.get(), f"graphql field {path}")


class ApiErrors(MaskErrors):
    """Rewrites each error of a result (also of each subscription event) as `api_error_of`
    says, keeping its path and locations."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [
            GraphQLError(
                (err := api_error_of(error)).message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                original_error=None,
                extensions=extensions(err),
            )
            for error in errors
        ]
