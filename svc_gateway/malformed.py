"""Malformed protobuf requests on gRPC: INVALID_ARGUMENT with google.rpc details, never UNKNOWN.

grpc's server calls the request deserializer (`FromString`) before any servicer code, and a
DecodeError there ends the RPC as UNKNOWN ("Unexpected DecodeError ...") with no details.
`GuardedRegistrar` stands in for the server when the generated `add_*Servicer_to_server`
functions register a service: it wraps every unary-request method's deserializer once, at
registration, so that bytes that do not parse become a `Malformed` marker and the method
answers INVALID_ARGUMENT naming the field `request` before the servicer sees it. Wrapping at
registration (rather than with a server interceptor, which grpc.aio runs as extra coroutines
on every call) keeps the per-call cost to one `isinstance`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from withdrawal_shared.errors import FieldViolation, invalid_argument
from withdrawal_shared.grpc_errors import abort


class Malformed:
    """A request whose bytes are not a serialized message of the method's input type."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Malformed(exc)

    return deserialize


def _refusal() -> Exception:
    return invalid_argument(
        [FieldViolation("request", "is not a serialized message of the method's request type")]
    )


def guard(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, answering INVALID_ARGUMENT for request bytes that do not parse."""
    if handler.request_streaming:
        return handler
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_behavior(request: Any, context: Any) -> Any:
            if isinstance(request, Malformed):
                await abort(context, _refusal())
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_behavior,
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream  # an async generator function on grpc.aio

        async def stream_behavior(request: Any, context: Any) -> Any:
            if isinstance(request, Malformed):
                await abort(context, _refusal())
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream_behavior,
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


class _GuardedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are guarded, each wrapped once and kept."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        if method not in self._guarded:
            found = self._inner.service(handler_call_details)
            self._guarded[method] = None if found is None else guard(found)
        return self._guarded[method]


class GuardedRegistrar:
    """Give this to a generated `add_*Servicer_to_server` in place of the server."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedGeneric(h) for h in handlers])

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name, {name: guard(handler) for name, handler in handlers.items()}
        )
