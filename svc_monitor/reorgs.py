"""Undoing a mined payout that a chain reorganisation took away: MINED -> BROADCAST.

When the canonical hash at a MINED payout's block differs from the stored one, the payout goes
back to BROADCAST (its block fields and vault item outcomes cleared), its CONFIRMING
withdrawals back to BROADCAST (audited as reorged), and the SAME signed bytes are sent again:
they can only mine once (same nonce), and the next receipt settles them as any other.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from svc_monitor.rebroadcast import Rebroadcaster
from svc_monitor.report import PollReport
from svc_monitor.rows import PayoutRow, PayoutRows, cas_payout, left_alone, linked
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction
from withdrawal_shared.db.transitions import Moved, move
from withdrawal_shared.metrics import CHAIN_REORGS
from withdrawal_shared.states import PayoutState, State

log = logging.getLogger(__name__)


class Reorgs:
    """Sends reorganised payouts back to BROADCAST; see the module docstring."""

    def __init__(self, rows: PayoutRows, rebroadcaster: Rebroadcaster) -> None:
        self._rows = rows
        self._rebroadcaster = rebroadcaster

    def reorged(self, row: PayoutRow, report: PollReport, canonical: str | None) -> None:
        """`row`'s block is no longer canonical (`canonical` is the hash at its height now,
        None when the chain is shorter): re-broadcast it and record the move back."""
        with self._rows.sessions() as session:
            raw = session.scalar(
                select(PayoutTransaction.raw_tx).where(PayoutTransaction.id == row.id)
            )
        # Re-broadcast first: if this process dies before the commit, the next poll sees the
        # same mismatch and does it all again (re-sending the same bytes is harmless).
        resent = raw is not None and self._rebroadcaster.send(row, raw)
        log.warning(
            "payout transaction reorganised out of the chain",
            extra={
                "payout_tx_id": row.id,
                "tx_hash": row.tx_hash,
                "block_number": row.block_number,
                "stored_hash": row.block_hash,
                "canonical_hash": canonical,
                "rebroadcast": resent,
            },
        )
        moved = self._rows.in_transaction(
            row, report, lambda s: self._record(s, row, resent=resent)
        )
        if moved is None:
            return
        report.reorged += 1
        CHAIN_REORGS.add(1)
        if not resent and raw is not None:
            self._rebroadcaster.remember(row.id, raw)

    def _record(self, session: Session, row: PayoutRow, *, resent: bool) -> list[Moved]:
        extra: dict[str, Any] = {}
        if resent:
            extra["broadcast_count"] = PayoutTransaction.broadcast_count + 1
        cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.BROADCAST,
            expected_block_hash=row.block_hash,
            block_number=None,
            block_hash=None,
            gas_used=None,
            effective_gas_price=None,
            fee_wei=None,
            receipt_status=None,
            revert_reason="",
            **extra,
        )
        session.execute(
            update(PayoutItem)
            .where(PayoutItem.payout_tx_id == row.id)
            .values(outcome="", outcome_reason="")
            .execution_options(synchronize_session=False)
        )
        message = (
            f"Block {row.block_number} holding transaction {row.tx_hash} was replaced by a "
            "chain reorganisation; the same signed transaction was broadcast again and is "
            "waiting to be mined. It cannot pay twice (same nonce)."
        )
        moved: list[Moved] = []
        for withdrawal in linked(session, row.id):
            if withdrawal.state == State.CONFIRMING:
                moved.append(
                    move(
                        session,
                        withdrawal,
                        State.BROADCAST,
                        actor=self._rows.actor,
                        reason="REORGED",
                        message=message,
                        reorged=True,
                        confirmations=0,
                    )
                )
            else:
                left_alone(withdrawal, row, "reorged")
        return moved
