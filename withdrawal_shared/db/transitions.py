"""Every state change is a compare-and-set on (id, state, version), written together with its
audit row in the caller's transaction. Nothing else updates `withdrawals.state`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from withdrawal_shared.db.audit import GENESIS, audit_hash
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.states import TERMINAL, State, can_move


class TransitionConflict(WithdrawalSystemError):
    """The withdrawal was not in the expected state/version: someone else moved it first."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Moved:
    """What a successful transition did, for publishing the event after commit."""

    withdrawal_id: str
    partner_id: str
    from_state: State | None  # None for the creation of the withdrawal
    to_state: State
    version: int
    reason: str
    reorged: bool
    occur_time: dt.datetime


def creation_audit(
    *,
    withdrawal_id: str,
    partner_id: str,
    state: str,
    reason: str,
    message: str,
    occur_time: dt.datetime,
    actor: str,
) -> tuple[dict[str, Any], Moved]:
    """The first audit row of a new withdrawal (version 1, from nothing to `state`) as column
    values, and the Moved it records. The withdrawal row gets `version` 1 and `audit_head` the
    audit row's `hash`. For writers that insert many rows at once without ORM objects (the
    gateway's group commit); `record_creation` is the same for one ORM row."""
    digest = audit_hash(
        prev_hash=GENESIS,
        withdrawal_id=withdrawal_id,
        version=1,
        from_state="",
        to_state=state,
        actor=actor,
        reason=reason,
        message=message,
        reorged=False,
        occur_time=occur_time,
    )
    audit = {
        "withdrawal_id": withdrawal_id,
        "version": 1,
        "from_state": "",
        "to_state": state,
        "actor": actor,
        "reason": reason,
        "message": message,
        "reorged": False,
        "occur_time": occur_time,
        "prev_hash": GENESIS,
        "hash": digest,
    }
    moved = Moved(withdrawal_id, partner_id, None, State(state), 1, reason, False, occur_time)
    return audit, moved


def record_creation(session: Session, row: Withdrawal, *, actor: str) -> Moved:
    """Fill a new row's audit fields and add its first audit row (RECEIVED)."""
    audit, moved = creation_audit(
        withdrawal_id=row.id,
        partner_id=row.partner_id,
        state=row.state,
        reason=row.state_reason,
        message=row.state_message,
        occur_time=row.create_time,
        actor=actor,
    )
    row.version = 1
    row.audit_head = audit["hash"]
    session.add(row)
    session.add(WithdrawalAudit(**audit))
    return moved


def move(
    session: Session,
    row: Withdrawal,
    to_state: State,
    *,
    actor: str,
    reason: str = "",
    message: str = "",
    reorged: bool = False,
    where: Sequence[ColumnElement[bool]] = (),
    **fields: Any,
) -> Moved:
    """Compare-and-set `row` (as read in this session) to `to_state`, with an audit row.

    Raises TransitionConflict when the stored row moved since it was read (or a `where`
    condition no longer holds), ValueError when the lifecycle forbids the move. `fields` are
    extra columns to set in the same UPDATE.
    """
    from_state = State(row.state)
    if not can_move(from_state, to_state):
        raise ValueError(f"withdrawal {row.id}: {from_state} -> {to_state} is not allowed")
    now = utcnow()
    version = row.version + 1
    digest = audit_hash(
        prev_hash=row.audit_head,
        withdrawal_id=row.id,
        version=version,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        message=message,
        reorged=reorged,
        occur_time=now,
    )
    values: dict[str, Any] = {
        "state": to_state.value,
        "state_reason": reason,
        "state_message": message[:512],
        "version": version,
        "audit_head": digest,
        "update_time": now,
        **fields,
    }
    if to_state in TERMINAL:
        values["end_time"] = now
    result = session.execute(
        update(Withdrawal)
        .where(
            Withdrawal.id == row.id,
            Withdrawal.state == from_state.value,
            Withdrawal.version == row.version,
            *where,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise TransitionConflict(f"withdrawal {row.id} moved since it was read")
    session.add(
        WithdrawalAudit(
            withdrawal_id=row.id,
            version=version,
            from_state=from_state.value,
            to_state=to_state.value,
            actor=actor,
            reason=reason,
            message=message[:512],
            reorged=reorged,
            occur_time=now,
            prev_hash=row.audit_head,
            hash=digest,
        )
    )
    for key, value in values.items():
        setattr(row, key, value)
    return Moved(row.id, row.partner_id, from_state, to_state, version, reason, reorged, now)


def verify_audit_chain(session: Session, withdrawal_id: str) -> bool:
    """Recompute the withdrawal's hash chain; False when any row was edited or removed."""
    rows = session.scalars(
        select(WithdrawalAudit)
        .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
        .order_by(WithdrawalAudit.version)
    ).all()
    head = session.scalar(select(Withdrawal.audit_head).where(Withdrawal.id == withdrawal_id))
    prev = GENESIS
    for expected_version, audit in enumerate(rows, start=1):
        if audit.version != expected_version or audit.prev_hash != prev:
            return False
        digest = audit_hash(
            prev_hash=prev,
            withdrawal_id=withdrawal_id,
            version=audit.version,
            from_state=audit.from_state,
            to_state=audit.to_state,
            actor=audit.actor,
            reason=audit.reason,
            message=audit.message,
            reorged=audit.reorged,
            occur_time=audit.occur_time,
        )
        if digest != audit.hash:
            return False
        prev = digest
    return bool(rows) and prev == head
