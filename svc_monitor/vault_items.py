"""The items of a vault payout: which ones the vault paid, and settling the ones it did not.

A PayoutVault payout pays many withdrawals, each under its own payout number. Its events say
per item whether it failed (its bit stays unset: nothing was paid for it) or was skipped as
already paid; every item they do not name was paid -- except in a treasury Safe's execution
whose receipt has no `PayoutExecuted` covering the item (the Safe's call did not run): that
item failed. At the confirmation depth a failed item's withdrawal goes ON_HOLD, and a skipped
one is matched to the payout that paid it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from svc_monitor.receipts import Receipt, decode_revert_data
from svc_monitor.rows import PayoutRow
from withdrawal_shared.chain.payout import (
    OUTFLOW_CAP_REASON,
    TRANSFER_RETURNED_FALSE_REASON,
    decode_payout_events,
)
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import Moved, move
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import PayoutState, State

log = logging.getLogger(__name__)


class Outcome:
    """`payout_items.outcome` once the payout is mined."""

    PAID = "PAID"
    FAILED = "FAILED"  # its bit stays unset: nothing was paid for it
    SKIPPED = "SKIPPED"  # the vault says it was already paid


def failure_reason(reason: bytes) -> str:
    """The reason a vault item failed, as stored in `payout_items.outcome_reason`."""
    if reason in (OUTFLOW_CAP_REASON, TRANSFER_RETURNED_FALSE_REASON):
        return reason.decode()
    return decode_revert_data(reason) or "the token reverted without a reason"


NOT_RUN_REASON = "the Safe's call to the vault did not run (no PayoutExecuted in the receipt)"
"""The outcome reason of a Safe execution's item that no `PayoutExecuted` event covers."""


def item_outcomes(
    row: PayoutRow, receipt: Receipt, vault: str | None = None, numbers: Collection[int] = ()
) -> dict[int, tuple[str, str]]:
    """Payout number -> (FAILED | SKIPPED, reason) from the vault's events; the numbers
    not named were paid. A hot wallet's vault payout calls the vault itself; a treasury Safe's
    execution (`safe_exec`, paying withdrawals) calls the Safe, and the vault's events are in
    its receipt, read at the chain's vault address `vault`. A successful Safe execution need
    not have run the vault's call (the Safe emits `ExecutionFailure` instead of reverting when
    `safeTxGas` or `gasPrice` is set): its item `numbers` that no `PayoutExecuted` covers are
    FAILED (`NOT_RUN_REASON`), never taken as paid."""
    if row.kind == "vault":
        address = row.to_address
    elif row.kind == "safe_exec" and vault:
        address = vault
    else:
        return {}
    events = decode_payout_events(receipt.logs, address)
    outcomes: dict[int, tuple[str, str]] = {
        number: (Outcome.SKIPPED, "already paid") for number in events.skipped
    }
    for failed in events.failed:
        outcomes[failed.number] = (Outcome.FAILED, failure_reason(failed.reason))
    if row.kind == "safe_exec":
        for number in numbers:
            covered = any(
                e.first_number <= number < e.first_number + e.count for e in events.executed
            )
            if not covered:
                outcomes[number] = (Outcome.FAILED, NOT_RUN_REASON)
    return outcomes


class VaultItems:
    """Settles the vault items that were not paid, at the confirmation depth, as `actor`."""

    def __init__(self, actor: str) -> None:
        self._actor = actor
        # Items the vault skipped as already paid: never expected in normal operation.
        self.skipped_as_paid = 0

    def failed(
        self,
        session: Session,
        withdrawal: Withdrawal,
        row: PayoutRow,
        item: PayoutItem,
        fee: int,
        depth: int,
    ) -> Moved:
        """The vault could not pay this item (its bit stays unset): nothing was paid. An
        outflow cap clears by itself; anything else needs an operator."""
        reason = (
            HoldReason.OUTFLOW_CAP_REACHED
            if item.outcome_reason == OUTFLOW_CAP_REASON.decode()
            else HoldReason.PAYOUT_ITEM_FAILED
        )
        detail = (
            f"In transaction {row.tx_hash} ({depth} confirmations) {NOT_RUN_REASON}: "
            "nothing was paid."
            if item.outcome_reason == NOT_RUN_REASON
            else f"In transaction {row.tx_hash} ({depth} confirmations) the payout of this "
            f"withdrawal failed ({item.outcome_reason}) while the others were paid."
        )
        return move(
            session,
            withdrawal,
            State.ON_HOLD,
            actor=self._actor,
            reason=reason,
            message=reason.state_message(detail),
            fee_wei=fee,
            confirmations=0,
            payout_tx_id=None,
        )

    def skipped(
        self, session: Session, withdrawal: Withdrawal, row: PayoutRow, fee: int, depth: int
    ) -> Moved:
        """The vault skipped the item as already paid: find the payout that paid it."""
        paid_by = session.scalar(
            select(PayoutTransaction.tx_hash)
            .join(PayoutItem, PayoutItem.payout_tx_id == PayoutTransaction.id)
            .where(
                PayoutItem.withdrawal_id == withdrawal.id,
                PayoutItem.outcome == Outcome.PAID,
                PayoutTransaction.state.in_([PayoutState.MINED, PayoutState.CONFIRMED]),
                PayoutTransaction.id != row.id,
            )
        )
        self.skipped_as_paid += 1
        log.error(
            "vault skipped a withdrawal as already paid",
            extra={"withdrawal_id": withdrawal.id, "payout_tx_id": row.id, "paid_by": paid_by},
        )
        if paid_by is not None:
            return move(
                session,
                withdrawal,
                State.COMPLETED,
                actor=self._actor,
                reason="CONFIRMED",
                message=f"Paid by transaction {paid_by}; transaction {row.tx_hash} skipped it "
                "as already paid (the vault never pays a number twice).",
                fee_wei=fee,
                confirmations=depth,
                tx_hash=paid_by,
            )
        return move(
            session,
            withdrawal,
            State.ON_HOLD,
            actor=self._actor,
            reason=HoldReason.ALREADY_PAID_ELSEWHERE,
            message=HoldReason.ALREADY_PAID_ELSEWHERE.state_message(
                f"Transaction {row.tx_hash} skipped it as already paid."
            ),
            fee_wei=fee,
            confirmations=0,
        )
