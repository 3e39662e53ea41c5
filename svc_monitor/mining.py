"""Matching broadcast payouts to their receipts: BROADCAST (or REPLACED) -> MINED.

For each payout transaction in BROADCAST, its receipt: none -> nothing (a missing receipt is
not a failure; a refused re-broadcast is sent again); status 1 -> MINED, its withdrawals
CONFIRMING, with the vault's per-item outcomes stored on its `payout_items`; status 0 -> MINED
with `receipt_status` 0 and the decoded revert reason (after checking that the receipt holds
no ERC-20 Transfer, i.e. that nothing was paid), its withdrawals left where they are: a
reorganisation may still take the block away and mine the same bytes again, successfully this
time.

A payout in REPLACED (the processor replaced it at the same nonce with higher fees) may still
mine instead of its replacement. If it does, ONE transaction makes it the row that counts
(`adopt`: its siblings at the same (wallet, nonce) become DROPPED, the withdrawals it pays
point at it again) and settles it as above. No receipt for any sibling, or a "nonce too low",
is never a failure: only one transaction per nonce can mine, and whichever does completes its
withdrawals once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from web3 import Web3

from svc_monitor.messages import confirming_message
from svc_monitor.rebroadcast import Rebroadcaster
from svc_monitor.receipts import erc20_transfers, read_receipt, revert_reason
from svc_monitor.report import PollReport
from svc_monitor.rows import (
    PayoutRow,
    PayoutRows,
    RowMoved,
    cas_payout,
    left_alone,
    linked_as_read,
)
from svc_monitor.vault_items import Outcome, item_outcomes
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, PayoutVault, Withdrawal
from withdrawal_shared.db.transitions import Moved, RowAsRead, Step, move_many, utcnow
from withdrawal_shared.states import PayoutState, State

log = logging.getLogger(__name__)


class Mining:
    """Settles BROADCAST and REPLACED payout rows by their receipts; see the module docstring."""

    def __init__(self, rows: PayoutRows, w3: Web3, rebroadcaster: Rebroadcaster) -> None:
        self._rows = rows
        self._w3 = w3
        self._rebroadcaster = rebroadcaster

    def check(
        self, row: PayoutRow, report: PollReport, required: int, *, replaced: bool = False
    ) -> None:
        """Settle a BROADCAST row by its receipt; with `replaced`, a REPLACED row whose hash
        mined after all is first made the row that counts (`adopt`), in the same
        transaction."""
        receipt = read_receipt(self._w3, row.tx_hash)
        if receipt is None and replaced:
            return  # the usual case: its replacement is the one to mine
        if receipt is None:
            report.pending += 1
            self._rebroadcaster.retry(row)
            return
        self._rebroadcaster.forget(row.id)
        crash_point("monitor.after_receipt_before_update")
        block_number = receipt.block_number
        gas_used = receipt.gas_used
        price = receipt.effective_gas_price
        block = {
            "block_number": block_number,
            "block_hash": receipt.block_hash,
            "gas_used": gas_used,
            "effective_gas_price": price,
            "fee_wei": gas_used * price,
        }
        if receipt.status == 1:
            depth = max(1, report.head - block_number + 1)
            vault, numbers = self._safe_exec_items(row)
            outcomes = item_outcomes(row, receipt, vault, numbers)
            moved = self._rows.in_transaction(
                row,
                report,
                lambda s: [
                    *(self.adopt(s, row) if replaced else []),
                    *self._record_mined(s, row, block, depth, required, outcomes),
                ],
            )
            if moved is not None:
                report.mined += 1
            return
        transfers = erc20_transfers(receipt.logs)
        if transfers:
            # Impossible for a reverted transaction; never call something FAILED that may
            # have paid. An operator has to look.
            report.anomalies += 1
            log.error(
                "reverted receipt holds ERC-20 transfers; leaving the payout for an operator",
                extra={"payout_tx_id": row.id, "tx_hash": row.tx_hash, "transfers": transfers},
            )
            return
        reason = revert_reason(self._w3, row.tx_hash, receipt)
        moved = self._rows.in_transaction(
            row,
            report,
            lambda s: [
                *(self.adopt(s, row) if replaced else []),
                *self._record_mined_reverted(s, row, block, reason),
            ],
        )
        if moved is not None:
            report.reverted += 1

    def _safe_exec_items(self, row: PayoutRow) -> tuple[str | None, list[int]]:
        """For a Safe execution: the chain's payout vault (whose events its receipt carries)
        and the payout numbers of its items; (None, []) for any other row."""
        if row.kind != "safe_exec":
            return None, []
        with self._rows.sessions() as session:
            vault = session.get(PayoutVault, self._rows.chain)
            numbers = session.scalars(
                select(PayoutItem.payout_number).where(PayoutItem.payout_tx_id == row.id)
            ).all()
        return (vault.address if vault is not None else None), [int(n) for n in numbers]

    def adopt(self, session: Session, row: PayoutRow) -> list[Moved]:
        """A REPLACED row's own hash mined: make it the row that counts. Its siblings at the
        same (wallet, nonce) can never mine now and become DROPPED; the withdrawals it pays
        point at it again (their state is unchanged, so there is nothing to audit). Then it
        is BROADCAST, for `_record_mined` / `_record_mined_reverted` in the same transaction."""
        pt = PayoutTransaction
        siblings = session.execute(
            select(pt.id, pt.state).where(
                pt.chain == self._rows.chain,
                pt.wallet == row.wallet,
                pt.nonce == row.nonce,
                pt.id != row.id,
            )
        ).all()
        settled = [s.id for s in siblings if s.state in (PayoutState.MINED, PayoutState.CONFIRMED)]
        if settled:
            # Another transaction at this nonce is recorded as mined: wait until the monitor
            # has seen its reorganisation before believing this receipt.
            raise RowMoved(f"payout transaction {settled[0]} at the same nonce is mined")
        cas_payout(session, row.id, PayoutState.REPLACED, PayoutState.BROADCAST)
        dropped = [s.id for s in siblings if s.state != PayoutState.DROPPED]
        if dropped:
            session.execute(
                update(pt)
                .where(pt.id.in_(dropped))
                .values(state=PayoutState.DROPPED, update_time=utcnow())
                .execution_options(synchronize_session=False)
            )
        paid = select(PayoutItem.withdrawal_id).where(PayoutItem.payout_tx_id == row.id)
        session.execute(
            update(Withdrawal)
            .where(
                Withdrawal.id.in_(paid),
                Withdrawal.payout_tx_id.in_([s.id for s in siblings]),
            )
            .values(payout_tx_id=row.id, tx_hash=row.tx_hash)
            .execution_options(synchronize_session=False)
        )
        for sibling in dropped:
            self._rebroadcaster.forget(sibling)
        log.warning(
            "a replaced payout transaction mined instead of its replacement",
            extra={"payout_tx_id": row.id, "tx_hash": row.tx_hash, "dropped": dropped},
        )
        return []

    def _record_mined(
        self,
        session: Session,
        row: PayoutRow,
        block: Mapping[str, Any],
        depth: int,
        required: int,
        outcomes: Mapping[int, tuple[str, str]],
    ) -> list[Moved]:
        cas_payout(
            session, row.id, PayoutState.BROADCAST, PayoutState.MINED, receipt_status=1, **block
        )
        session.execute(
            update(PayoutItem)
            .where(PayoutItem.payout_tx_id == row.id)
            .values(outcome=Outcome.PAID, outcome_reason="")
            .execution_options(synchronize_session=False)
        )
        for number, (outcome, reason) in outcomes.items():
            session.execute(
                update(PayoutItem)
                .where(PayoutItem.payout_tx_id == row.id, PayoutItem.payout_number == number)
                .values(outcome=outcome, outcome_reason=reason[:256])
                .execution_options(synchronize_session=False)
            )
        message = confirming_message(block["block_number"], row.tx_hash, depth, required)
        mined: list[RowAsRead] = []
        for withdrawal, _ in linked_as_read(session, row.id):
            if withdrawal.state in (State.SIGNED, State.BROADCAST):
                mined.append(withdrawal)
            else:
                left_alone(withdrawal, row, "mined")
        # All of them in one statement (compare-and-set on each; a conflict rolls back).
        return move_many(
            session,
            mined,
            Step(State.CONFIRMING, "MINED", message),
            actor=self._rows.actor,
            fields={"confirmations": depth},
        )

    def _record_mined_reverted(
        self, session: Session, row: PayoutRow, block: Mapping[str, Any], reason: str
    ) -> list[Moved]:
        """A reverted receipt: the nonce is used and nothing was paid -- in this block. Until
        the confirmation depth a reorganisation may still take the block away (and the same
        bytes may then mine successfully), so the withdrawals stay where they are and only
        the payout row records it; the confirmation step settles them at the depth."""
        cas_payout(
            session,
            row.id,
            PayoutState.BROADCAST,
            PayoutState.MINED,
            receipt_status=0,
            revert_reason=reason[:256],
            **block,
        )
        log.warning(
            "payout transaction reverted; its withdrawals are retried once it has the "
            "confirmation depth",
            extra={
                "payout_tx_id": row.id,
                "tx_hash": row.tx_hash,
                "block_number": block["block_number"],
                "revert_reason": reason,
            },
        )
        return []
