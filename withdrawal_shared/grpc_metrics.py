"""RED metrics of a grpc.aio server, counted where its handlers are registered.

`MeteredRegistrar(server)` stands in for the server when the generated
`add_*Servicer_to_server` functions register a service (it composes with the gateway's
`GuardedRegistrar`, which takes any registrar): every method handler is wrapped once, at
registration, so each call adds one `aws_grpc_server_handled_total{grpc_service, grpc_method,
grpc_code}` and one `aws_grpc_server_handling_seconds{grpc_service, grpc_method}` observation.
No server interceptor runs on every call. Each registered method's OK series exists at zero
from registration on. A server stream is timed over its whole life.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from withdrawal_shared.metrics import GRPC_SERVER_HANDLED, GRPC_SERVER_HANDLING_SECONDS

_OK = grpc.StatusCode.OK.name


def _code_name(context: Any, failed: BaseException | None) -> str:
    """The status the call ended with: what the servicer set or aborted with."""
    code: Any = None
    try:
        code = context.code()
    except Exception:  # older grpc without ServicerContext.code(): judge by the exception
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if failed is None:
        return _OK
    return grpc.StatusCode.UNKNOWN.name


def _split(full_method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or full_method


def metered(
    handler: grpc.RpcMethodHandler[Any, Any], full_method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, counted and timed (unary-request methods; others are returned as is)."""
    service, method = _split(full_method)
    timing = {"grpc_service": service, "grpc_method": method}
    GRPC_SERVER_HANDLED.add(0, {**timing, "grpc_code": _OK})

    def record(context: Any, started: float, failed: BaseException | None) -> None:
        GRPC_SERVER_HANDLING_SECONDS.record(time.perf_counter() - started, timing)
        GRPC_SERVER_HANDLED.add(1, {**timing, "grpc_code": _code_name(context, failed)})

    if handler.request_streaming:
        return handler
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_behavior(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            failed: BaseException | None = None
            try:
                return await unary(request, context)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                record(context, started, failed)

        return grpc.unary_unary_rpc_method_handler(
            unary_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream  # an async generator function on grpc.aio

        async def stream_behavior(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            failed: BaseException | None = None
            try:
                async for item in stream(request, context):
                    yield item
            except BaseException as exc:
                failed = exc
                raise
            finally:
                record(context, started, failed)

        return grpc.unary_stream_rpc_method_handler(
            stream_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class _MeteredGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are metered, each wrapped once and kept."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._metered: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        if method not in self._metered:
            found = self._inner.service(handler_call_details)
            self._metered[method] = None if found is None else metered(found, method)
        return self._metered[method]


class MeteredRegistrar:
    """Give this (or a registrar wrapping it) to a generated `add_*Servicer_to_server`."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_MeteredGeneric(h) for h in handlers])

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: metered(handler, f"/{service_name}/{name}")
                for name, handler in handlers.items()
            },
        )


__all__ = ["MeteredRegistrar", "metered"]
