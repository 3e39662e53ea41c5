"""`GenericOnlyRegistrar`: the innermost registrar a service gives the generated
`add_*Servicer_to_server` functions (wrapped by `MeteredRegistrar` and, in the gateway,
`svc_gateway.malformed.GuardedRegistrar`).

The generated functions add each service twice: as a generic handler, which serves every
method of the service, and as registered methods. grpc.aio's accept loop keeps one pending
request-call future per registered method, plus one for the generic ones, and waits on all of
them (`asyncio.wait(..., FIRST_COMPLETED)`) for every call it accepts, so each call pays for
every method the server registers. The gateway serves 63 methods (its four services and
health): served through the generic handlers alone, an echo server with that many methods
costs about 0.1-0.17 ms less CPU per call (`docs/benchmarks.md`, API). The calls, their
handlers and their outcomes are the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc


class GenericOnlyRegistrar:
    """Stands in for a `grpc.aio.Server`: generic handlers are added, registered methods are
    not (their generic handler, added by the same generated function, serves them)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Nothing: see the module docstring."""


__all__ = ["GenericOnlyRegistrar"]
