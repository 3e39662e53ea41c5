"""Counting a mined payout's confirmations, and settling it at the confirmation depth.

For each payout transaction in MINED: when the canonical hash at its block differs from the
stored one it was reorganised away (`reorgs.Reorgs`); otherwise its CONFIRMING withdrawals'
`confirmations` and the message stating them (`messages.confirming_message`) are updated
together and, at the chain's confirmation depth, the transaction is CONFIRMED and its
withdrawals COMPLETED with their share of the fee (`fees.split_fee`; vault items that were
not paid are settled by `vault_items.VaultItems`) -- or, for a reverted one, REVERTED and its
withdrawals ON_HOLD `PAYOUT_REVERTED` with their share of the fee, unlinked from it: nothing
was paid and the processor pays them again (a vault payout under the same payout numbers,
which the vault never pays twice; a single transfer at a new nonce, which the signer allows
because the old nonce is now consumed by a transaction that paid nothing). The older rows it
replaced at its (wallet, nonce) become DROPPED.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from svc_monitor.fees import split_fee
from svc_monitor.head import BlockHashes
from svc_monitor.messages import confirming_message, paid_message
from svc_monitor.reorgs import Reorgs
from svc_monitor.report import PollReport
from svc_monitor.rows import (
    PayoutRow,
    PayoutRows,
    RowMoved,
    cas_payout,
    left_alone,
    linked,
    linked_as_read,
)
from svc_monitor.vault_items import Outcome, VaultItems
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import Moved, RowAsRead, Step, move, move_many, utcnow
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import PayoutState, State

log = logging.getLogger(__name__)


class Confirmations:
    """Follows MINED payout rows to their confirmation depth; see the module docstring."""

    def __init__(
        self, rows: PayoutRows, blocks: BlockHashes, reorgs: Reorgs, items: VaultItems
    ) -> None:
        self._rows = rows
        self._blocks = blocks
        self._reorgs = reorgs
        self._items = items

    def check(self, row: PayoutRow, report: PollReport, required: int) -> None:
        """Look at a MINED row against the head `report.head`: reorganised, at the depth of
        `required` confirmations, or still counting."""
        if row.block_number is None or row.block_hash is None:  # not written by us: skip
            report.anomalies += 1
            log.error("MINED payout without block fields", extra={"payout_tx_id": row.id})
            return
        if row.block_number > report.head:
            return  # mined after this poll read the head: look again next poll
        canonical = self._blocks.canonical_hash(row.block_number)
        if canonical != row.block_hash.lower():
            self._reorgs.reorged(row, report, canonical)
            return
        depth = report.head - row.block_number + 1
        if depth >= required and row.receipt_status == 0:
            moved = self._rows.in_transaction(
                row, report, lambda s: self._record_reverted(s, row, depth)
            )
            if moved is not None:
                report.reverted_final += 1
            return
        if depth >= required:
            moved = self._rows.in_transaction(
                row, report, lambda s: self._record_confirmed(s, row, depth)
            )
            if moved is not None:
                report.confirmed += 1
            return
        with self._rows.sessions.begin() as session:
            session.execute(
                update(Withdrawal)
                .where(
                    Withdrawal.payout_tx_id == row.id,
                    Withdrawal.state == State.CONFIRMING.value,
                    Withdrawal.confirmations != depth,
                )
                .values(
                    confirmations=depth,
                    state_message=confirming_message(
                        row.block_number, row.tx_hash, depth, required
                    ),
                )
                .execution_options(synchronize_session=False)
            )

    def _record_confirmed(self, session: Session, row: PayoutRow, depth: int) -> list[Moved]:
        cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.CONFIRMED,
            expected_block_hash=row.block_hash,
        )
        self._drop_replaced(session, row)
        crash_point("monitor.mid_state_update")  # the payout row is updated, uncommitted
        withdrawals = linked_as_read(session, row.id)
        # Every item shares the gas, paid or not (see fees.split_fee for the rounding rule).
        shares = split_fee(row.fee_wei or 0, [w.id for w, _ in withdrawals])
        # Only the items that were not paid: any other one (PAID, or no item) is paid.
        outcomes = {
            item.withdrawal_id: item
            for item in session.scalars(
                select(PayoutItem).where(
                    PayoutItem.payout_tx_id == row.id,
                    PayoutItem.outcome.in_([Outcome.FAILED, Outcome.SKIPPED]),
                )
            )
        }
        moved: list[Moved] = []
        paid: list[RowAsRead] = []
        fees: dict[str, dict[str, Any]] = {}
        for withdrawal, fee_wei in withdrawals:
            if withdrawal.state not in (State.CONFIRMING, State.BROADCAST):
                left_alone(withdrawal, row, "confirmed")
                continue
            fee = (fee_wei or 0) + shares[withdrawal.id]
            item = outcomes.get(withdrawal.id)
            outcome = item.outcome if item is not None else Outcome.PAID
            if outcome in (Outcome.FAILED, Outcome.SKIPPED):
                # Rare: moved one by one, on the ORM row (read in this same transaction).
                loaded = session.get(Withdrawal, withdrawal.id)
                if loaded is None or loaded.version != withdrawal.version:
                    raise RowMoved(f"withdrawal {withdrawal.id} moved since it was read")
                if outcome == Outcome.FAILED:
                    assert item is not None
                    moved.append(self._items.failed(session, loaded, row, item, fee, depth))
                else:
                    moved.append(self._items.skipped(session, loaded, row, fee, depth))
            else:
                paid.append(withdrawal)
                fees[withdrawal.id] = {"fee_wei": fee}
        # The paid ones all at once (one statement per source state), each with its own
        # fee share; a conflict rolls the whole payout back, as one `move` failing did.
        message = paid_message(row.block_number, row.tx_hash, depth)
        moved += move_many(
            session,
            paid,
            Step(State.COMPLETED, "CONFIRMED", message),
            actor=self._rows.actor,
            fields={"confirmations": depth},
            row_fields=fees,
        )
        return moved

    def _record_reverted(self, session: Session, row: PayoutRow, depth: int) -> list[Moved]:
        """A reverted transaction reached the confirmation depth: REVERTED, and every
        withdrawal it was to pay goes ON_HOLD `PAYOUT_REVERTED` with its share of the fee,
        unlinked from it, for the processor to pay again (nothing was paid)."""
        cas_payout(
            session,
            row.id,
            PayoutState.MINED,
            PayoutState.REVERTED,
            expected_block_hash=row.block_hash,
        )
        self._drop_replaced(session, row)
        message = HoldReason.PAYOUT_REVERTED.state_message(
            f"Transaction {row.tx_hash} reverted in block {row.block_number} "
            f"({depth} confirmations): {row.revert_reason or 'reverted'}."
        )
        withdrawals = linked(session, row.id)
        shares = split_fee(row.fee_wei or 0, [w.id for w in withdrawals])
        moved: list[Moved] = []
        for withdrawal in withdrawals:
            if withdrawal.state not in (State.SIGNED, State.BROADCAST, State.CONFIRMING):
                left_alone(withdrawal, row, "reverted")
                continue
            moved.append(
                move(
                    session,
                    withdrawal,
                    State.ON_HOLD,
                    actor=self._rows.actor,
                    reason=HoldReason.PAYOUT_REVERTED,
                    message=message,
                    fee_wei=(withdrawal.fee_wei or 0) + shares[withdrawal.id],
                    confirmations=0,
                    payout_tx_id=None,
                )
            )
        return moved

    def _drop_replaced(self, session: Session, row: PayoutRow) -> None:
        """The transactions `row` replaced at its nonce can never mine now: DROPPED."""
        if row.nonce < 0:
            return
        session.execute(
            update(PayoutTransaction)
            .where(
                PayoutTransaction.chain == self._rows.chain,
                PayoutTransaction.wallet == row.wallet,
                PayoutTransaction.nonce == row.nonce,
                PayoutTransaction.id != row.id,
                PayoutTransaction.state == PayoutState.REPLACED,
            )
            .values(state=PayoutState.DROPPED, update_time=utcnow())
            .execution_options(synchronize_session=False)
        )
