"""The admin API's one entry point for both transports: trace id, operator authentication,
the method's role (`roles.METHOD_ROLES`), then the core by name (`ConfirmChange` ->
`AdminCore.confirm_change`).

A caller without the role is PERMISSION_DENIED `ROLE_REQUIRED` naming the role, and the
denial is written to the admin audit trail before the error is returned. At start-up every
AdminService method must have a handler and a role row (TypeError otherwise), and every
row must name a method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from svc_gateway.admin.core import AdminCore
from svc_gateway.admin.roles import METHOD_ROLES
from svc_gateway.dispatch import bind_trace_id, snake_case
from svc_gateway.errors import ROLE_REQUIRED
from withdrawal_shared.db.operators import OperatorIdentity, Role, grants, operator_name

AdminHandler = Callable[[OperatorIdentity, Any], Awaitable[Message]]


class OperatorAuth(Protocol):
    """What the admin dispatcher authenticates with: the operator credential's
    `OperatorAuthenticator`, or a portal operator session's (`svc_gateway.portal.identity`)."""

    async def authenticate(self, metadata: Mapping[str, str]) -> OperatorIdentity: ...


def request_target(request: Message) -> str:
    """The resource a request is about (its `name`, `parent` or `address`), for the audit
    trail."""
    for field in ("name", "parent", "address"):
        if field in request.DESCRIPTOR.fields_by_name:
            return str(getattr(request, field))
    return ""


class AdminDispatcher:
    def __init__(
        self,
        service: ServiceDescriptor,
        core: AdminCore,
        auth: OperatorAuth,
        roles: Mapping[str, Role] = METHOD_ROLES,
    ) -> None:
        self.service = service
        self.core = core
        self.auth = auth
        self.roles = dict(roles)
        self._handlers: dict[str, AdminHandler] = {}
        names = {method.name for method in service.methods}
        for name in sorted(names):
            handler = getattr(core, snake_case(name), None)
            if handler is None:
                raise TypeError(
                    f"{type(core).__name__} has no handler for {service.full_name}.{name}"
                )
            if name not in self.roles:
                raise TypeError(f"{service.full_name}.{name} has no row in METHOD_ROLES")
            self._handlers[name] = handler
        extra = sorted(set(self.roles) - names)
        if extra:
            raise TypeError(f"METHOD_ROLES names methods {service.full_name} lacks: {extra}")

    async def unary(
        self, method: MethodDescriptor | str, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        name = method if isinstance(method, str) else method.name
        bind_trace_id(metadata)
        caller = await self.auth.authenticate(metadata)
        required = self.roles[name]
        if not grants(caller.roles, required):
            held = ", ".join(sorted(r.value for r in caller.roles)) or "no role"
            err = ROLE_REQUIRED.error(
                f"{name} requires the role {required.value!r}; "
                f"{operator_name(caller.operator_id)} holds {held}. Ask an admin to change "
                "your roles, or use an operator that holds it.",
                metadata={"role": required.value, "method": name},
            )
            await self.core._db(
                self.core.record_refusal, caller, name, request_target(request), err
            )
            raise err
        return await self._handlers[name](caller, request)
