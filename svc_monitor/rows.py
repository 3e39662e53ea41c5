"""The payout rows the monitor settles, and the withdrawals linked to them.

`PayoutRows` reads the rows of one chain by state, runs one row's settlement in one database
transaction (`in_transaction`: a conflict rolls it all back and the row is looked at again in
the next poll), and reads the withdrawals a row pays. `cas_payout` is the compare-and-set of a
row's state that every settlement step starts with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from svc_monitor.report import PollReport
from withdrawal_shared import tracing
from withdrawal_shared.db.models import PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import (
    WITHDRAWALS,
    Moved,
    RowAsRead,
    TransitionConflict,
    utcnow,
)
from withdrawal_shared.states import TERMINAL, State

log = logging.getLogger(__name__)


class RowMoved(Exception):
    """The payout row was not in the expected state: someone else moved it first."""


@dataclass(frozen=True)
class PayoutRow:
    """The columns of a payout transaction the monitor reads to settle it."""

    id: str
    tx_hash: str
    block_number: int | None
    block_hash: str | None
    fee_wei: int | None
    kind: str = "transfer"
    to_address: str = ""
    wallet: str = ""
    nonce: int = -1
    receipt_status: int | None = None
    revert_reason: str = ""


class PayoutRows:
    """The payout rows of one chain, as the monitor (`actor`) reads and settles them."""

    def __init__(
        self, sessions: sessionmaker[Session], chain: str, *, actor: str, batch_size: int
    ) -> None:
        self.sessions = sessions
        self.chain = chain
        self.actor = actor
        self._batch_size = batch_size

    def in_state(self, state: str) -> list[PayoutRow]:
        """At most `batch_size` rows in `state`, least recently updated first."""
        pt = PayoutTransaction
        with self.sessions() as session:
            result = session.execute(
                select(
                    pt.id,
                    pt.tx_hash,
                    pt.block_number,
                    pt.block_hash,
                    pt.fee_wei,
                    pt.kind,
                    pt.to_address,
                    pt.wallet,
                    pt.nonce,
                    pt.receipt_status,
                    pt.revert_reason,
                )
                .where(pt.chain == self.chain, pt.state == state)
                .order_by(pt.update_time, pt.id)
                .limit(self._batch_size)
            ).all()
        return [
            PayoutRow(
                r.id,
                r.tx_hash,
                r.block_number,
                r.block_hash,
                r.fee_wei,
                r.kind,
                r.to_address,
                r.wallet,
                int(r.nonce),
                r.receipt_status,
                r.revert_reason or "",
            )
            for r in result
        ]

    def in_transaction(
        self, row: PayoutRow, report: PollReport, work: Callable[[Session], list[Moved]]
    ) -> list[Moved] | None:
        """Run `work(session)` in one transaction; None (rolled back) on a conflict. When
        tracing is on, inside a span of the payout in its withdrawals' traces
        (`tracing.payout_span`)."""
        try:
            with self.sessions.begin() as session:
                traceparents = linked_traceparents(session, row.id) if tracing.enabled() else []
                with tracing.payout_span("monitor settle payout", row.id, traceparents):
                    moved = work(session)
        except (TransitionConflict, RowMoved) as exc:
            report.conflicts += 1
            log.info(
                "payout or withdrawal moved concurrently; will look again next poll",
                extra={"payout_tx_id": row.id, "error": str(exc)},
            )
            return None
        report.moved.extend(moved)
        return moved


def linked(session: Session, payout_tx_id: str) -> Sequence[Withdrawal]:
    """The withdrawals a payout row pays (ORM rows), by id."""
    return session.scalars(
        select(Withdrawal).where(Withdrawal.payout_tx_id == payout_tx_id).order_by(Withdrawal.id)
    ).all()


def linked_traceparents(session: Session, payout_tx_id: str) -> list[str | None]:
    """The stored trace contexts of the withdrawals a payout row pays, by id."""
    return list(
        session.scalars(
            select(Withdrawal.trace_context)
            .where(Withdrawal.payout_tx_id == payout_tx_id)
            .order_by(Withdrawal.id)
        )
    )


def linked_as_read(session: Session, payout_tx_id: str) -> list[tuple[RowAsRead, int | None]]:
    """`linked` for `move_many` (no ORM objects), each with its `fee_wei`."""
    c = WITHDRAWALS.c
    result = session.execute(
        select(c.id, c.partner_id, c.state, c.version, c.audit_head, c.trace_context, c.fee_wei)
        .where(c.payout_tx_id == payout_tx_id)
        .order_by(c.id)
    )
    return [(RowAsRead(*r[:6]), r[6]) for r in result]


def left_alone(withdrawal: Withdrawal | RowAsRead, row: PayoutRow, event: str) -> None:
    """Log a withdrawal not in a state the payout `event` moves (terminal ones silently)."""
    if State(withdrawal.state) in TERMINAL:
        return
    log.warning(
        "withdrawal not in a state this payout event moves; left as is",
        extra={
            "withdrawal_id": withdrawal.id,
            "state": withdrawal.state,
            "payout_tx_id": row.id,
            "event": event,
        },
    )


def cas_payout(
    session: Session,
    payout_tx_id: str,
    from_state: str,
    to_state: str,
    *,
    expected_block_hash: str | None = None,
    **values: Any,
) -> None:
    """Compare-and-set a payout row's state (and block hash); `RowMoved` when it moved."""
    conditions = [PayoutTransaction.id == payout_tx_id, PayoutTransaction.state == from_state]
    if expected_block_hash is not None:
        conditions.append(PayoutTransaction.block_hash == expected_block_hash)
    result = session.execute(
        update(PayoutTransaction)
        .where(*conditions)
        .values(state=to_state, update_time=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RowMoved(f"payout transaction {payout_tx_id} is no longer {from_state}")
