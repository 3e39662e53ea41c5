"""The gRPC adapter of the WebhookService: every method hands its request to the dispatcher
and renders errors (methods made from the service descriptor, so none is forgotten)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from svc_gateway.dispatch import Dispatcher
from svc_gateway.errors import abort
from svc_gateway.servicer import _metadata

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]

SERVICE = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"]


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatch = dispatcher

    async def _unary(self, name: str, request: Any, context: Context) -> Any:
        try:
            return await self._dispatch.unary(name, request, _metadata(context))
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises


def _method(name: str) -> Callable[[WebhookServicer, Any, Context], Awaitable[Any]]:
    async def call(self: WebhookServicer, request: Any, context: Context) -> Any:
        return await self._unary(name, request, context)

    call.__name__ = name
    return call


for _method_descriptor in SERVICE.methods:
    setattr(WebhookServicer, _method_descriptor.name, _method(_method_descriptor.name))
