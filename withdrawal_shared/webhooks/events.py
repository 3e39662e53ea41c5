"""The events a partner's endpoints receive and their JSON payloads.

Every row of the withdrawal audit trail (`withdrawal_audit`, written in the same transaction
as the state change it records) is one event: type `withdrawal.<state>` (lowercase, e.g.
`withdrawal.completed`), id `evt_<withdrawal id>_<version>` (stable: the same event always has
the same id), sequence = the withdrawal's version. The sender's own event when it disables a
failing endpoint is `webhook_endpoint.disabled`.

The payload follows the Standard Webhooks shape `{"type", "timestamp", "data"}`; `data` shows
the withdrawal as it was at that version (from the audit row's snapshot).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from withdrawal_shared.amounts import format_amount
from withdrawal_shared.states import State

WITHDRAWAL_EVENT_TYPES: tuple[str, ...] = tuple(f"withdrawal.{s.value.lower()}" for s in State)
ENDPOINT_DISABLED = "webhook_endpoint.disabled"
EVENT_TYPES: frozenset[str] = frozenset({*WITHDRAWAL_EVENT_TYPES, ENDPOINT_DISABLED})


def event_type_for(to_state: str) -> str:
    return f"withdrawal.{to_state.lower()}"


def withdrawal_event_id(withdrawal_id: str, version: int) -> str:
    return f"evt_{withdrawal_id}_{version}"


def wants(event_types: str, event_type: str) -> bool:
    """Whether an endpoint with the stored `event_types` (space-separated; empty: every
    withdrawal event) receives `event_type`."""
    listed = event_types.split()
    if not listed:
        return event_type != ENDPOINT_DISABLED
    return event_type in listed


def timestamp(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def withdrawal_payload(
    *,
    event_id: str,
    withdrawal_id: str,
    version: int,
    from_state: str,
    to_state: str,
    reason: str,
    message: str,
    occur_time: dt.datetime,
    snapshot: str | None,
    client_reference: str,
    user_ref: str,
    chain: str,
    token: str,
    decimals: int,
    recipient: str,
    amount: int,
) -> str:
    snap: dict[str, Any] = json.loads(snapshot) if snapshot else {}
    data = {
        "withdrawal": f"withdrawals/{withdrawal_id}",
        "sequence": version,
        "state": to_state,
        "previousState": from_state,
        "stateReason": reason,
        "stateMessage": message,
        "clientReference": client_reference,
        "userRef": user_ref,
        "chain": chain,
        "token": token,
        "recipientAddress": recipient,
        "amount": format_amount(amount, decimals),
        "transactionHash": snap.get("tx_hash") or "",
        "confirmations": int(snap.get("confirmations") or 0),
    }
    return encode(event_id, event_type_for(to_state), occur_time, data)


def encode(event_id: str, event_type: str, occur_time: dt.datetime, data: dict[str, Any]) -> str:
    body = {"id": event_id, "type": event_type, "timestamp": timestamp(occur_time), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)
