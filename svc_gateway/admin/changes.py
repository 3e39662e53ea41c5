"""Four eyes: propose, confirm, reject and expire configuration changes (`admin_changes`).

A change is PROPOSED by an admin and takes effect only when ANOTHER admin confirms it: the
confirmation runs the kind's `apply` in the same transaction as the change's move to APPLIED,
so a change is applied exactly once. Confirming an APPLIED change, or rejecting a REJECTED
one, returns it unchanged; the proposer confirming its own change is PERMISSION_DENIED
`SELF_CONFIRMATION`. A change not decided by its `expire_time` becomes EXPIRED (`expire_due`,
run before every read or decision). These functions work in the caller's session; the
caller commits and audits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from svc_gateway.errors import (
    CHANGE_NOT_APPLICABLE,
    CHANGE_NOT_PENDING,
    IDEMPOTENCY_KEY_REUSED,
    SELF_CONFIRMATION,
)
from withdrawal_shared.db.admin_audit import canonical_json
from withdrawal_shared.db.changes import (
    AppliedChange,
    ChangeEffect,
    ChangeNotApplicable,
    ChangeRegistry,
)
from withdrawal_shared.db.models import AdminChange
from withdrawal_shared.db.operators import operator_name
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found, quoted
from withdrawal_shared.ids import new_ulid

PROPOSED = "PROPOSED"
APPLIED = "APPLIED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
CHANGE_PREFIX = "changes/"


def change_name(change_id: str) -> str:
    return CHANGE_PREFIX + change_id


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def change_as_dict(row: AdminChange) -> dict[str, Any]:
    """The change as the audit trail records it."""
    return {
        "change": change_name(row.id),
        "kind": row.kind,
        "payload": json.loads(row.payload),
        "state": row.state,
        "proposed_by": row.proposed_by,
        "decided_by": row.decided_by,
    }


def _fingerprint(kind: str, payload: Mapping[str, Any]) -> str:
    text = canonical_json({"kind": kind, "payload": payload}) or ""
    return hashlib.sha256(text.encode()).hexdigest()


def expire_due(session: Session) -> int:
    """Mark every PROPOSED change past its expire_time EXPIRED; how many were."""
    moment = now()
    result = session.execute(
        update(AdminChange)
        .where(AdminChange.state == PROPOSED, AdminChange.expire_time <= moment)
        .values(state=EXPIRED, decide_time=moment)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Proposed:
    row: AdminChange
    created: bool


def propose(
    session: Session,
    registry: ChangeRegistry,
    *,
    kind: str,
    payload: Mapping[str, Any],
    proposer: str,
    request_id: str,
    ttl_seconds: float,
) -> Proposed:
    """Store a PROPOSED change after its kind validated the payload; idempotent on
    (proposer, request_id) when a request id is given."""
    change_kind = registry.get(kind)
    if change_kind is None:
        known = ", ".join(registry.names())
        raise invalid_argument(
            [FieldViolation("change.kind", f"{quoted(kind)} is not a change kind; known: {known}")]
        )
    target = change_kind.validate(payload)
    fingerprint = _fingerprint(kind, payload)
    if request_id:
        existing = (
            session.query(AdminChange)
            .filter(AdminChange.proposed_by == proposer, AdminChange.request_id == request_id)
            .one_or_none()
        )
        if existing is not None:
            if existing.request_fingerprint != fingerprint:
                raise IDEMPOTENCY_KEY_REUSED.error(
                    f"The idempotency key {quoted(request_id)} was already used for a different "
                    f"change ({change_name(existing.id)}); use a new key for a new change.",
                    metadata={"change": change_name(existing.id)},
                )
            return Proposed(existing, False)
    moment = now()
    row = AdminChange(
        id=new_ulid(),
        kind=kind,
        payload=canonical_json(payload) or "{}",
        target=target,
        state=PROPOSED,
        proposed_by=proposer,
        request_id=request_id or None,
        request_fingerprint=fingerprint,
        decided_by=None,
        reject_reason="",
        create_time=moment,
        expire_time=moment + dt.timedelta(seconds=ttl_seconds),
        decide_time=None,
    )
    session.add(row)
    session.flush()
    return Proposed(row, True)


def _locked(session: Session, change_id: str) -> AdminChange:
    row = session.get(AdminChange, change_id, with_for_update=True)
    if row is None:
        raise not_found(change_name(change_id))
    return row


def _not_pending(row: AdminChange, doing: str) -> Exception:
    return CHANGE_NOT_PENDING.error(
        f"{change_name(row.id)} is {row.state} and can no longer be {doing}; "
        "propose it again if it is still wanted.",
        metadata={"state": row.state},
    )


def confirm(
    session: Session, registry: ChangeRegistry, change_id: str, confirmer: str
) -> tuple[AdminChange, ChangeEffect | None]:
    """Apply the change as `confirmer`: (the change, what applying did; None when it was
    already applied)."""
    row = _locked(session, change_id)
    if row.state == APPLIED:
        return row, None
    if row.state == PROPOSED and row.expire_time <= now():
        row.state, row.decide_time = EXPIRED, now()
    if row.state != PROPOSED:
        raise _not_pending(row, "confirmed")
    if row.proposed_by == confirmer:
        raise SELF_CONFIRMATION.error(
            f"{change_name(row.id)} was proposed by {operator_name(confirmer)}, who cannot "
            "also confirm it: another admin must.",
            metadata={"proposer": operator_name(row.proposed_by)},
        )
    change_kind = registry.get(row.kind)
    if change_kind is None:
        raise CHANGE_NOT_APPLICABLE.error(
            f"{change_name(row.id)} is of kind {row.kind!r}, which this gateway does not know; "
            "reject it, or confirm it on a gateway that does."
        )
    payload = json.loads(row.payload)
    try:
        change_kind.validate(payload)
        effect = change_kind.apply(session, AppliedChange(row.id, row.kind, payload))
    except ChangeNotApplicable as exc:
        raise CHANGE_NOT_APPLICABLE.error(
            f"{change_name(row.id)} cannot be applied: {exc}. Reject it, or fix what blocks "
            "it and confirm again.",
            metadata={"change": change_name(row.id)},
        ) from None
    row.state, row.decided_by, row.decide_time = APPLIED, confirmer, now()
    return row, effect


def reject(
    session: Session, change_id: str, rejecter: str, reason: str
) -> tuple[AdminChange, bool]:
    """Reject the change as `rejecter`: (the change, whether this call rejected it)."""
    row = _locked(session, change_id)
    if row.state == REJECTED:
        return row, False
    if row.state == PROPOSED and row.expire_time <= now():
        row.state, row.decide_time = EXPIRED, now()
    if row.state != PROPOSED:
        raise _not_pending(row, "rejected")
    row.state, row.decided_by, row.decide_time = REJECTED, rejecter, now()
    row.reject_reason = reason
    return row, True
