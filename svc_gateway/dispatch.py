"""The one entry point both transports call: trace id, authentication, the key's scope and
rate limit (`svc_gateway.access`), then the core.

Handlers are found by name (`CreateWithdrawal` -> `core.create_withdrawal`), checked against
the service descriptor at start-up, so adding an RPC to the proto and the core is enough for
both gRPC and REST to serve it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from svc_gateway.access import METHOD_ACCESS, scope_missing
from svc_gateway.auth import Caller
from svc_gateway.rate_limit import RateLimit
from withdrawal_shared import tracing
from withdrawal_shared.logs import trace_id_from_traceparent, trace_id_var

UnaryHandler = Callable[[Caller, Any], Awaitable[Message]]
StreamHandler = Callable[[Caller, Any], AsyncIterator[Message]]
Charge = Callable[[RateLimit], Awaitable[None]]
"""Charges one request to a rate limit; raises RATE_LIMITED when it is over."""


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def bind_trace_id(metadata: Mapping[str, str]) -> str:
    """Use the caller's W3C traceparent trace id (or a new one) for this request's logs."""
    trace_id = trace_id_var.get()
    if not trace_id:
        ids = tracing.current_ids()  # the gRPC server span's, when tracing is on
        trace_id = ids[0] if ids else trace_id_from_traceparent(metadata.get("traceparent"))
        trace_id_var.set(trace_id)
    return trace_id


class CallerAuth(Protocol):
    """What a dispatcher authenticates with: the API key's `Authenticator`, or a portal
    session's (`svc_gateway.portal.identity`)."""

    async def authenticate(self, metadata: Mapping[str, str]) -> Caller: ...


class Dispatcher:
    def __init__(
        self,
        service: ServiceDescriptor,
        core: object,
        auth: CallerAuth,
        charge: Charge | None = None,
    ) -> None:
        self.service = service
        self.auth = auth
        self._charge = charge
        missing = sorted(m.name for m in service.methods if m.name not in METHOD_ACCESS)
        if missing:
            raise TypeError(f"METHOD_ACCESS is missing {missing}")
        self._unary: dict[str, UnaryHandler] = {}
        self._stream: dict[str, StreamHandler] = {}
        for method in service.methods:
            handler = getattr(core, snake_case(method.name), None)
            if handler is None:
                raise TypeError(f"{type(core).__name__} has no handler for {method.full_name}")
            if method.server_streaming:
                self._stream[method.name] = handler
            else:
                self._unary[method.name] = handler

    async def unary(
        self, method: MethodDescriptor | str, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        name = method if isinstance(method, str) else method.name
        bind_trace_id(metadata)
        caller = await self._admit(name, metadata)
        return await self._unary[name](caller, request)

    async def stream(
        self, method: MethodDescriptor | str, request: Message, metadata: Mapping[str, str]
    ) -> AsyncIterator[Message]:
        name = method if isinstance(method, str) else method.name
        bind_trace_id(metadata)
        caller = await self._admit(name, metadata)
        async for message in self._stream[name](caller, request):
            yield message

    async def admit(self, name: str, metadata: Mapping[str, str]) -> Caller:
        """`_admit` for an adapter that calls the core itself (the REST upload)."""
        bind_trace_id(metadata)
        return await self._admit(name, metadata)

    async def _admit(self, name: str, metadata: Mapping[str, str]) -> Caller:
        """The authenticated caller, once its scope is checked and (unless the core charges
        it in a batch) the request charged to its rate limit."""
        caller = await self.auth.authenticate(metadata)
        denied = scope_missing(caller, name)
        if denied is not None:
            raise denied
        if (
            self._charge is not None
            and caller.rate_limit is not None
            and not METHOD_ACCESS[name].charged_in_batch
        ):
            await self._charge(caller.rate_limit)
        return caller
