"""The GraphQL schema, and its SDL printed into the repository (`schema.graphql`).

`python -m svc_gateway.graphql.schema` rewrites `schema.graphql` (`make gen` runs it);
`--check` fails when the file differs from the code (tests/graphql/test_schema_sdl.py
checks the same).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from svc_gateway.graphql import limits
from svc_gateway.graphql.errors import ApiErrors, log_errors
from svc_gateway.graphql.resolvers import Mutation, Query, Subscription

SDL_PATH = Path(__file__).with_name("schema.graphql")


class GatewaySchema(strawberry.Schema):
    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """A single result (POST): a subscription is refused (400), it needs the WebSocket."""
        allowed = set(allowed_operation_types or (OperationType.QUERY, OperationType.MUTATION))
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed - {OperationType.SUBSCRIPTION},
            operation_extensions,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Structured log lines instead of strawberry's own (which prints every stack)."""
        log_errors(errors)


def build_schema() -> GatewaySchema:
    extensions: list[Any] = [*limits.extensions(), ApiErrors]
    built = GatewaySchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
    limits.check_schema(built._schema)
    return built


schema = build_schema()


def sdl() -> str:
    return schema.as_str() + "\n"


def main(argv: list[str]) -> int:
    text = sdl()
    if "--check" in argv:
        if SDL_PATH.read_text(encoding="utf-8") != text:
            print(f"{SDL_PATH} differs from the schema: run 'make gen'", file=sys.stderr)
            return 1
        return 0
    SDL_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
