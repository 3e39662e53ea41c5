"""Rendering errors on gRPC, shared by every service: `ApiError` -> status with google.rpc
details in the trailers; anything else -> logged with its trace id and answered UNAVAILABLE (a
transient database failure) or INTERNAL (`withdrawal_shared.unexpected`), never a stack
trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpc_status import rpc_status

from withdrawal_shared.errors import ApiError
from withdrawal_shared.logs import new_trace_id, trace_id_var
from withdrawal_shared.unexpected import unexpected_error

if TYPE_CHECKING:
    import grpc


def to_api_error(exc: BaseException) -> ApiError:
    """`exc` itself when it is an ApiError; otherwise log it and return UNAVAILABLE or
    INTERNAL (`unexpected_error`)."""
    if isinstance(exc, ApiError):
        return exc
    return unexpected_error(exc, trace_id_var.get() or new_trace_id())


async def abort(context: grpc.aio.ServicerContext[object, object], exc: BaseException) -> None:
    """Abort the RPC with the rich status for `exc` (raises grpc's AbortError); the error's
    headers go into the trailing metadata beside the status details."""
    error = to_api_error(exc)
    status = rpc_status.to_status(error.to_status())
    trailing = (*status.trailing_metadata, *error.headers.items())
    await context.abort(status.code, status.details, trailing)
