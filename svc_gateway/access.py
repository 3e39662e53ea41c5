"""What each public RPC requires of the calling key: one table, checked at start-up against
the service descriptor so no RPC is served without an entry.

`scope` is the `Scope` the key must hold (else PERMISSION_DENIED `SCOPE_MISSING`, naming it).
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


@dataclass(frozen=True, slots=True)
class Access:
    scope: Scope
    charged_in_batch: bool = False


METHOD_ACCESS: dict[str, Access] = {
    "CreateWithdrawal": Access(Scope.WITHDRAWALS_CREATE, charged_in_batch=True),
    "CancelWithdrawal": Access(Scope.WITHDRAWALS_CREATE),
    "GetWithdrawal": Access(Scope.WITHDRAWALS_READ),
    "ListWithdrawals": Access(Scope.WITHDRAWALS_READ),
    "WatchWithdrawal": Access(Scope.WITHDRAWALS_READ),
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
"""By method name (the WithdrawalService's and the WebhookService's; names are unique)."""


def check_table(service: ServiceDescriptor) -> None:
    """TypeError when an RPC of `service` has no entry."""
    missing = sorted({m.name for m in service.methods} - set(METHOD_ACCESS))
    if missing:
        raise TypeError(f"METHOD_ACCESS is missing {missing}")


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
