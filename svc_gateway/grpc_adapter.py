"""The gRPC side of every public and admin service: each method hands its request to the
dispatcher and renders errors (`UnaryAdapter`, `StreamAdapter`). Services whose methods are
all unary get them made from the service descriptor, so none can be forgotten
(`describe_unary_methods`: the admin API and the WebhookService)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from google.protobuf.descriptor import ServiceDescriptor

from svc_gateway.errors import abort

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


def metadata_of(context: Context) -> dict[str, str]:
    """The call's metadata, keys lowercased, binary values left out."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


class UnaryDispatch(Protocol):
    async def unary(self, method: Any, request: Any, metadata: Mapping[str, str]) -> Any: ...


class UnaryAdapter:
    """The shared body of every method: dispatch, and abort with the error's status."""

    def __init__(self, dispatcher: UnaryDispatch) -> None:
        self._dispatch = dispatcher

    async def _unary(self, name: str, request: Any, context: Context) -> Any:
        try:
            return await self._dispatch.unary(name, request, metadata_of(context))
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises


class StreamDispatch(UnaryDispatch, Protocol):
    def stream(
        self, method: Any, request: Any, metadata: Mapping[str, str]
    ) -> AsyncIterator[Any]: ...


class StreamAdapter(UnaryAdapter):
    """`UnaryAdapter` for services with server-streaming methods too."""

    def __init__(self, dispatcher: StreamDispatch) -> None:
        super().__init__(dispatcher)
        self._streams = dispatcher

    async def _stream(self, name: str, request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for message in self._streams.stream(name, request, metadata_of(context)):
                yield message
        except Exception as exc:
            await abort(context, exc)


AdapterT = TypeVar("AdapterT", bound=type[UnaryAdapter])


def describe_unary_methods(service: ServiceDescriptor) -> Callable[[AdapterT], AdapterT]:
    """A class decorator setting one method per RPC of `service` (all unary) on the class."""

    def decorate(cls: AdapterT) -> AdapterT:
        for method in service.methods:
            setattr(cls, method.name, _method(method.name))
        return cls

    return decorate


def _method(name: str) -> Callable[[UnaryAdapter, Any, Context], Awaitable[Any]]:
    async def call(self: UnaryAdapter, request: Any, context: Context) -> Any:
        return await self._unary(name, request, context)

    call.__name__ = name
    return call
