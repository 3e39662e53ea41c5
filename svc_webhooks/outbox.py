"""The outbox: the withdrawal audit trail, read in id order without skipping a row.

Audit ids are assigned when a row is inserted, but the gateway, the processor and the monitor
commit in any order, so a row with a lower id can become visible after a higher one. A plain
"after the last id read" cursor would skip it. The cursor here is a frontier (the highest id
read) plus the gaps below it: ids not seen yet, each with the time it was first missed. Every
poll reads the rows above the frontier, then the rows of the gaps (in that order: a row
committed before one the first query saw is seen by the second). A gap still missing after
`gap_grace_seconds` is a rolled-back insert and is dropped. Everything at or below the
frontier and not a gap has been fanned out. The cursor moves on ids alone (primary-key
reads); the rows' details (their withdrawals and tokens) are read only while an endpoint is
enabled, so a system without webhook endpoints pays almost nothing for the sender.

Fan-out (one `webhook_deliveries` row per event and wanting endpoint of the withdrawal's
partner, enabled and registered before the event occurred) and the cursor's update share one
transaction, which also locks the cursor row, so a crash redoes the poll and a second sender
waits for the first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import (
    Token,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutboxCursor,
    Withdrawal,
    WithdrawalAudit,
)
from withdrawal_shared.db.sql_text import insert_rows
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.metrics import WEBHOOK_OUTBOX_GAPS_SKIPPED
from withdrawal_shared.webhooks import events

log = logging.getLogger(__name__)

CURSOR = "withdrawal_audit"
DELIVERIES = cast(Table, WebhookDelivery.__table__)
GAP_QUERY_MAX = 1000
"""Gap ids looked up per poll at most (the rest the next poll)."""


@dataclass(frozen=True)
class OutboxReport:
    rows: int
    deliveries: int
    frontier: int
    gaps: int
    skipped: int


@dataclass(frozen=True)
class OutboxRow:
    """An audit row with what an event needs of its withdrawal and token."""

    id: int
    withdrawal_id: str
    version: int
    from_state: str
    to_state: str
    reason: str
    message: str
    occur_time: dt.datetime
    snapshot: Any
    partner_id: str
    client_reference: str
    user_ref: str
    chain: str
    recipient: str
    amount: Any
    symbol: str
    decimals: int


def _rows(session: Session, *where: Any, limit: int | None = None) -> list[OutboxRow]:
    """The audit rows matching `where`, in id order, with their withdrawals and tokens.

    Three reads rather than one join: the audit rows by primary key (a range or a list of
    ids), their withdrawals by primary key, and the few tokens. A join ordered by the audit
    id lets MariaDB start from the tokens and scan every withdrawal on each poll. The reads
    run on the session's connection (Core rows), not through the ORM's result machinery."""
    query = (
        select(
            WithdrawalAudit.id,
            WithdrawalAudit.withdrawal_id,
            WithdrawalAudit.version,
            WithdrawalAudit.from_state,
            WithdrawalAudit.to_state,
            WithdrawalAudit.reason,
            WithdrawalAudit.message,
            WithdrawalAudit.occur_time,
            WithdrawalAudit.snapshot,
        )
        .where(*where)
        .order_by(WithdrawalAudit.id)
    )
    if limit is not None:
        query = query.limit(limit)
    audits = session.connection().execute(query).all()
    if not audits:
        return []
    withdrawals = {
        w.id: w
        for w in session.connection()
        .execute(
            select(
                Withdrawal.id,
                Withdrawal.partner_id,
                Withdrawal.client_reference,
                Withdrawal.user_ref,
                Withdrawal.chain,
                Withdrawal.recipient,
                Withdrawal.amount,
                Withdrawal.token_id,
            ).where(Withdrawal.id.in_({a.withdrawal_id for a in audits}))
        )
        .all()
    }
    tokens = {
        t.id: t
        for t in session.connection().execute(select(Token.id, Token.symbol, Token.decimals))
    }
    rows: list[OutboxRow] = []
    for a in audits:
        w = withdrawals.get(a.withdrawal_id)
        if w is None:  # committed with its audit row: never seen apart
            continue
        token = tokens[w.token_id]
        rows.append(
            OutboxRow(
                a.id,
                a.withdrawal_id,
                a.version,
                a.from_state,
                a.to_state,
                a.reason,
                a.message,
                a.occur_time,
                a.snapshot,
                w.partner_id,
                w.client_reference,
                w.user_ref,
                w.chain,
                w.recipient,
                w.amount,
                token.symbol,
                token.decimals,
            )
        )
    return rows


def _ids(session: Session, *where: Any, limit: int | None = None) -> list[int]:
    """The ids of the audit rows matching `where`, ascending (primary-key reads)."""
    query = select(WithdrawalAudit.id).where(*where).order_by(WithdrawalAudit.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.connection().scalars(query).all())


def _any_endpoint_enabled(session: Session) -> bool:
    found = session.scalar(
        select(WebhookEndpoint.id).where(WebhookEndpoint.state == "ENABLED").limit(1)
    )
    return found is not None


def poll_outbox(
    session: Session, *, batch: int, gap_grace_seconds: float, now: float | None = None
) -> OutboxReport:
    """One poll, in the caller's transaction (commit it to keep the result)."""
    clock = time.time() if now is None else now
    cursor = session.get(WebhookOutboxCursor, CURSOR, with_for_update=True)
    if cursor is None:  # a database migrated without the seed row: start at the newest
        cursor = WebhookOutboxCursor(name=CURSOR, frontier=0, gaps="{}", update_time=utcnow())
        session.add(cursor)
    gaps: dict[int, float] = {int(k): float(v) for k, v in json.loads(cursor.gaps).items()}
    frontier = cursor.frontier

    # The cursor moves on ids alone; the rows' details are read only when an endpoint is
    # enabled. Checked after the reads: an endpoint created or enabled later wants none of
    # these rows, which committed before it (fan-out skips events older than an endpoint).
    fresh = _ids(session, WithdrawalAudit.id > frontier, limit=batch)
    expected = frontier + 1
    for audit_id in fresh:
        for missing in range(expected, audit_id):
            gaps.setdefault(missing, clock)
        expected = audit_id + 1
    if fresh:
        frontier = fresh[-1]
    filled: list[int] = []
    if gaps:
        wanted = sorted(gaps)[:GAP_QUERY_MAX]
        filled = _ids(session, WithdrawalAudit.id.in_(wanted))
        for audit_id in filled:
            gaps.pop(audit_id, None)
    skipped = [gap for gap, first in gaps.items() if clock - first > gap_grace_seconds]
    for gap in skipped:
        del gaps[gap]
    if skipped:
        WEBHOOK_OUTBOX_GAPS_SKIPPED.add(len(skipped))
        log.warning(
            "outbox ids taken as never committed",
            extra={"ids": skipped[:20], "count": len(skipped)},
        )
    ids = sorted([*filled, *fresh])
    created = 0
    if ids and _any_endpoint_enabled(session):
        created = fan_out(session, _rows(session, WithdrawalAudit.id.in_(ids)))
    cursor.frontier = frontier
    cursor.gaps = json.dumps({str(k): v for k, v in sorted(gaps.items())})
    cursor.update_time = utcnow()
    return OutboxReport(len(ids), created, frontier, len(gaps), len(skipped))


def fan_out(session: Session, rows: Sequence[OutboxRow]) -> int:
    """Insert one delivery per row and endpoint that wants it; the number inserted."""
    if not rows:
        return 0
    partners = {row.partner_id for row in rows}
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.partner_id.in_(partners), WebhookEndpoint.state == "ENABLED"
        )
    ).all()
    if not endpoints:
        return 0
    by_partner: dict[str, list[WebhookEndpoint]] = {}
    for endpoint in endpoints:
        by_partner.setdefault(endpoint.partner_id, []).append(endpoint)
    now = utcnow()
    values: list[dict[str, Any]] = []
    for row in rows:
        event_type = events.event_type_for(row.to_state)
        event_id = events.withdrawal_event_id(row.withdrawal_id, row.version)
        payload: str | None = None
        for endpoint in by_partner.get(row.partner_id, ()):
            if endpoint.create_time > row.occur_time or not events.wants(
                endpoint.event_types, event_type
            ):
                continue
            if payload is None:
                payload = events.withdrawal_payload(
                    event_id=event_id,
                    withdrawal_id=row.withdrawal_id,
                    version=row.version,
                    from_state=row.from_state,
                    to_state=row.to_state,
                    reason=row.reason,
                    message=row.message,
                    occur_time=row.occur_time,
                    snapshot=row.snapshot,
                    client_reference=row.client_reference,
                    user_ref=row.user_ref,
                    chain=row.chain,
                    token=row.symbol,
                    decimals=row.decimals,
                    recipient=row.recipient,
                    amount=row.amount,
                )
            values.append(
                {
                    "endpoint_id": endpoint.id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "withdrawal_id": row.withdrawal_id,
                    "sequence": row.version,
                    "payload": payload,
                    "state": "PENDING",
                    "attempts": 0,
                    "next_attempt_time": now,
                    "lease_until": None,
                    "occur_time": row.occur_time,
                    "create_time": now,
                    "end_time": None,
                }
            )
    insert_rows(session.connection(), DELIVERIES, values)  # one multi-row INSERT
    return len(values)
