"""What a client is told about an exception that no code turned into an `ApiError`: every
transport (gRPC, REST, GraphQL) of every service answers through `unexpected_error`.

A transient database failure (`withdrawal_shared.db.transient`) is UNAVAILABLE with
`Retry-After`, logged as a warning without a stack; anything else is INTERNAL, logged with
its stack. Either answer carries the trace id and never the exception's text.
"""

from __future__ import annotations

import logging

from withdrawal_shared.db.transient import describe, transient_cause
from withdrawal_shared.errors import ApiError, internal, unavailable

log = logging.getLogger(__name__)


def answer_for(exc: BaseException, trace_id: str) -> ApiError:
    """The error a client gets for `exc` (not logged): UNAVAILABLE or INTERNAL."""
    return unavailable(trace_id) if transient_cause(exc) is not None else internal(trace_id)


def log_unexpected(exc: BaseException, trace_id: str, where: str = "") -> None:
    """Log `exc` with the trace id (and `where`, e.g. the REST route): a transient database
    failure as a warning naming the driver's error, anything else as an error with its stack."""
    context = f"{where}: " if where else ""
    cause = transient_cause(exc)
    if cause is not None:
        log.warning(
            "%sthe database did not answer in time (%s); answered UNAVAILABLE",
            context,
            describe(cause),
            extra={"trace_id": trace_id},
        )
    else:
        log.error("%sunexpected error", context, exc_info=exc, extra={"trace_id": trace_id})


def unexpected_error(exc: BaseException, trace_id: str, where: str = "") -> ApiError:
    """`answer_for(exc)`, logged (`log_unexpected`)."""
    log_unexpected(exc, trace_id, where)
    return answer_for(exc, trace_id)
