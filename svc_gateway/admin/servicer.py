"""The gRPC adapter of the admin API: every AdminService method hands its request to the
dispatcher and renders errors (methods made from the service descriptor, so none is
forgotten)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from assetwithdrawal.admin.v1 import admin_pb2, admin_pb2_grpc
from svc_gateway.admin.dispatch import AdminDispatcher
from svc_gateway.errors import abort
from svc_gateway.servicer import _metadata

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]

SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, dispatcher: AdminDispatcher) -> None:
        self._dispatch = dispatcher

    async def _unary(self, name: str, request: Any, context: Context) -> Any:
        try:
            return await self._dispatch.unary(name, request, _metadata(context))
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises


def _method(name: str) -> Callable[[AdminServicer, Any, Context], Awaitable[Any]]:
    async def call(self: AdminServicer, request: Any, context: Context) -> Any:
        return await self._unary(name, request, context)

    call.__name__ = name
    return call


for _method_descriptor in SERVICE.methods:
    setattr(AdminServicer, _method_descriptor.name, _method(_method_descriptor.name))
