"""What each public RPC requires of the calling key: one table, checked at start-up against
the service descriptor so no RPC is served without an entry.

`scope` is the `Scope` the key must hold (else PERMISSION_DENIED `SCOPE_MISSING`, naming it).
A scope that depends on the request's fields is checked by the core where it validates the
request, with the same error (`priority_scope_missing`: an EMERGENCY CreateWithdrawal needs
`Scope.EMERGENCY` as well).
Every request is charged to the key's rate limit; `charged_in_batch` marks the RPCs whose core
charges them itself, once per group commit for all of a key's requests in it (so a refused
create stores nothing); the dispatcher charges the others before calling the core.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from svc_gateway.auth import Caller
from svc_gateway.errors import SCOPE_MISSING
from withdrawal_shared.errors import ApiError
from withdrawal_shared.scopes import Scope
from withdrawal_shared.states import Priority


@dataclass(frozen=True, slots=True)
class Access:
    scope: Scope
    charged_in_batch: bool = False


METHOD_ACCESS: dict[str, Access] = {
    "CreateWithdrawal": Access(Scope.WITHDRAWALS_CREATE, charged_in_batch=True),
    "CancelWithdrawal": Access(Scope.WITHDRAWALS_CREATE),
    "GetWithdrawal": Access(Scope.WITHDRAWALS_READ),
    "ListWithdrawals": Access(Scope.WITHDRAWALS_READ),
    "ListStateChanges": Access(Scope.WITHDRAWALS_READ),
    "WatchWithdrawal": Access(Scope.WITHDRAWALS_READ),
    "CreateBatch": Access(Scope.BATCHES_CREATE),
    "CancelBatch": Access(Scope.BATCHES_CREATE),
    "GetBatch": Access(Scope.WITHDRAWALS_READ),
    "ListBatches": Access(Scope.WITHDRAWALS_READ),
    "GetBatchReport": Access(Scope.WITHDRAWALS_READ),
    "WatchBatch": Access(Scope.WITHDRAWALS_READ),
    # WebhookService
    "CreateWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "GetWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "ListWebhookEndpoints": Access(Scope.WEBHOOKS_MANAGE),
    "UpdateWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "DisableWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "EnableWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "DeleteWebhookEndpoint": Access(Scope.WEBHOOKS_MANAGE),
    "RotateWebhookSecret": Access(Scope.WEBHOOKS_MANAGE),
    "ListWebhookDeliveryAttempts": Access(Scope.WEBHOOKS_MANAGE),
    "ReplayWebhookEvents": Access(Scope.WEBHOOKS_MANAGE),
}
"""By method name (the WithdrawalService's, the BatchService's and the WebhookService's; no
name is in two)."""

PRIORITY_SCOPES: dict[Priority, Scope] = {Priority.EMERGENCY: Scope.EMERGENCY}
"""The scope a requested priority needs besides the method's own."""


def check_table(*services: ServiceDescriptor) -> None:
    """TypeError when an RPC of the public services has no entry (or an entry names none)."""
    methods = {m.name for service in services for m in service.methods}
    if methods != set(METHOD_ACCESS):
        missing = sorted(methods - set(METHOD_ACCESS))
        unknown = sorted(set(METHOD_ACCESS) - methods)
        raise TypeError(f"METHOD_ACCESS is missing {missing}, names unknown {unknown}")


def scope_missing(caller: Caller, method: str) -> ApiError | None:
    """SCOPE_MISSING when the caller's key lacks the method's scope, else None."""
    scope = METHOD_ACCESS[method].scope
    if scope in caller.scopes:
        return None
    return SCOPE_MISSING.error(
        f"This API key lacks the scope {scope.value!r} that {method} needs; use a key "
        "granted it, or ask for one.",
        metadata={"scope": scope.value, "method": method},
    )


def priority_scope_missing(
    caller: Caller, method: str, priority: Priority | None
) -> ApiError | None:
    """SCOPE_MISSING when the request asks for a priority whose scope the key lacks (an
    EMERGENCY withdrawal needs `emergency`), else None."""
    scope = PRIORITY_SCOPES.get(priority) if priority is not None else None
    if scope is None or scope in caller.scopes:
        return None
    return SCOPE_MISSING.error(
        f"This API key lacks the scope {scope.value!r} that {method} needs for a "
        f"{priority} withdrawal; use a key granted it, ask for one, or send the request "
        "without that priority.",
        metadata={"scope": scope.value, "method": method},
    )
