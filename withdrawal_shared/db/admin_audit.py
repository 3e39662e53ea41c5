"""The admin audit trail: one row per admin action or refusal, in one hash chain.

Each row's hash covers its content and the previous row's hash (`audit.chain_digest`, the
same hashing as the withdrawal audit trail), so editing, inserting or removing any row is
detectable with `verify_admin_audit_chain`. `admin_audit_head` (one row) names the newest
row's `seq` and hash: `append_admin_audit` updates it first, in the caller's transaction,
which serialises appenders on its row lock (on SQLite, on the write lock) and makes removing
the newest rows detectable too.

Outcomes: SUCCEEDED, DENIED (PERMISSION_DENIED: a missing role, confirming one's own change)
and FAILED (any other refusal). `before` and `after` are stored as canonical JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from withdrawal_shared.db.audit import GENESIS, chain_digest
from withdrawal_shared.db.models import AdminAudit, AdminAuditHead

SUCCEEDED = "SUCCEEDED"
DENIED = "DENIED"
FAILED = "FAILED"
OUTCOMES = (SUCCEEDED, DENIED, FAILED)


def canonical_json(value: Mapping[str, Any] | None) -> str | None:
    """Sorted keys, no spaces; None stays None."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def admin_audit_hash(
    *,
    prev_hash: str,
    seq: int,
    operator_id: str,
    action: str,
    target: str,
    before_value: str | None,
    after_value: str | None,
    outcome: str,
    reason: str,
    occur_time: dt.datetime,
) -> str:
    """The row's hash; a missing before/after value hashes as `\\x00` (unlike any JSON)."""
    return chain_digest(
        [
            prev_hash,
            str(seq),
            operator_id,
            action,
            target,
            "\x00" if before_value is None else before_value,
            "\x00" if after_value is None else after_value,
            outcome,
            reason,
            occur_time.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        ]
    )


def append_admin_audit(
    session: Session,
    *,
    operator_id: str,
    action: str,
    target: str,
    outcome: str,
    reason: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AdminAudit:
    """Add the next row of the trail in the caller's transaction (committed with it)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    # Take the head's lock before reading it: concurrent appenders queue here.
    session.execute(
        update(AdminAuditHead).where(AdminAuditHead.id == 1).values(seq=AdminAuditHead.seq)
    )
    head = session.execute(
        select(AdminAuditHead.seq, AdminAuditHead.hash).where(AdminAuditHead.id == 1)
    ).one()
    seq = int(head.seq) + 1
    occur_time = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    before_value, after_value = canonical_json(before), canonical_json(after)
    digest = admin_audit_hash(
        prev_hash=head.hash,
        seq=seq,
        operator_id=operator_id,
        action=action,
        target=target[:256],
        before_value=before_value,
        after_value=after_value,
        outcome=outcome,
        reason=reason,
        occur_time=occur_time,
    )
    row = AdminAudit(
        seq=seq,
        operator_id=operator_id,
        action=action,
        target=target[:256],
        before_value=before_value,
        after_value=after_value,
        outcome=outcome,
        reason=reason,
        occur_time=occur_time,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(row)
    session.execute(
        update(AdminAuditHead).where(AdminAuditHead.id == 1).values(seq=seq, hash=digest)
    )
    return row


def verify_admin_audit_chain(session: Session) -> bool:
    """Recompute the whole chain; False when any row was edited, inserted or removed."""
    head = session.execute(
        select(AdminAuditHead.seq, AdminAuditHead.hash).where(AdminAuditHead.id == 1)
    ).one_or_none()
    if head is None:
        return False
    prev, expected = GENESIS, 1
    for row in session.scalars(select(AdminAudit).order_by(AdminAudit.seq)):
        if row.seq != expected or row.prev_hash != prev:
            return False
        digest = admin_audit_hash(
            prev_hash=prev,
            seq=row.seq,
            operator_id=row.operator_id,
            action=row.action,
            target=row.target,
            before_value=row.before_value,
            after_value=row.after_value,
            outcome=row.outcome,
            reason=row.reason,
            occur_time=row.occur_time,
        )
        if digest != row.hash:
            return False
        prev, expected = digest, expected + 1
    return bool(prev == head.hash and expected - 1 == head.seq)
