"""Malformed protobuf requests on gRPC: INVALID_ARGUMENT with google.rpc details, never UNKNOWN.

grpc's server calls the request deserializer (`FromString`) before any servicer code, and a
DecodeError there ends the RPC as UNKNOWN ("Unexpected DecodeError ...") with no details.
`MalformedRequestInterceptor` wraps the deserializer of every unary-request method of every
service on the server: bytes that do not parse become a `Malformed` marker, and the method
answers INVALID_ARGUMENT naming the field `request` before the servicer sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
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
