"""Withdrawals above their token's Safe threshold: paid by the treasury Safe, never by a hot
wallet's own payout and never by a plain ERC-20 transfer.

A withdrawal is *Safe-bound* when its chain has a treasury Safe (`safe_treasuries`), its token a
`safe_threshold_base_units`, and its amount is above it (`SafeRules`, read per use: the
threshold may change at runtime).

- Approvals (`Screening.decide`): a Safe-bound withdrawal needs at least the treasury's
  threshold of distinct approvers, whatever the approval rules say (the larger of the two), so
  it waits PENDING_APPROVAL (`safe_approvals_required`).
- Routing (`SafeRouter.route`, from the batcher): once QUEUED (or ON_HOLD, resumable) and
  within the vault's funds, one transaction locks the vault's number counter, gives the
  withdrawal its payout number if it has none (never a second one) and records a PENDING
  `safe_transactions` row of purpose PAYOUT naming it (`withdrawal_id`). A withdrawal with a
  Safe transaction not settled (PENDING, SIGNED, EXECUTING) is never a hot-wallet candidate
  (`not_safe_routed`). One whose approvals are fewer than the Safe's threshold (the threshold
  was lowered, or the token's Safe threshold changed, after it was approved) is not routed:
  it goes ON_HOLD `SAFE_APPROVALS_MISSING` for an operator.
- Execution (`svc_processor.treasury`): the treasury executor runs PAYOUT rows in the same
  per-chain Safe nonce sequence as treasury operations (`safe_payout_call`,
  `link_withdrawal`).

A withdrawal that already has a payout number is paid under it by whichever path takes it
(the vault's bitmap pays a number once); a withdrawal with a payout number is never paid by a
direct ERC-20 transfer (`Pipeline._pay_directly`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, insert, not_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from withdrawal_shared.approvals.core import APPROVED, approval_tallies
from withdrawal_shared.chain.payout import Payment, encode_payout
from withdrawal_shared.db.models import (
    PayoutItem,
    PayoutVault,
    SafeTransaction,
    SafeTreasury,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.db.treasury_changes import SafePurpose, SafeTxState
from withdrawal_shared.holds import RESUMABLE
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import State

log = logging.getLogger(__name__)

KIND = "vault.payout"
"""`safe_transactions.kind` of a Safe payout."""
UNSETTLED = (SafeTxState.PENDING.value, SafeTxState.SIGNED.value, SafeTxState.EXECUTING.value)


@dataclass(frozen=True)
class SafeRules:
    """A chain's treasury Safe threshold (None: no treasury Safe) and its tokens' Safe
    thresholds (token id -> base units)."""

    threshold: int | None
    token_thresholds: dict[int, int]

    @classmethod
    def load(cls, session: Session, chain: str) -> SafeRules:
        treasury = session.get(SafeTreasury, chain)
        if treasury is None:
            return cls(None, {})
        thresholds = {
            token_id: int(units)
            for token_id, units in session.execute(
                select(Token.id, Token.safe_threshold_base_units).where(
                    Token.chain == chain, Token.safe_threshold_base_units.is_not(None)
                )
            )
            if units is not None
        }
        return cls(treasury.threshold, thresholds)

    def bound(self, token_id: int, amount: int) -> bool:
        """Whether a withdrawal of `amount` of the token is paid by the treasury Safe."""
        limit = self.token_thresholds.get(token_id)
        return self.threshold is not None and limit is not None and amount > limit


def safe_approvals_required(session: Session, rows: Sequence[Withdrawal]) -> dict[str, int]:
    """Withdrawal id -> the treasury Safe's threshold, for the Safe-bound ones among `rows`."""
    required: dict[str, int] = {}
    rules: dict[str, SafeRules] = {}
    for row in rows:
        if row.chain not in rules:
            rules[row.chain] = SafeRules.load(session, row.chain)
        chain_rules = rules[row.chain]
        if chain_rules.threshold is not None and chain_rules.bound(row.token_id, row.amount):
            required[row.id] = chain_rules.threshold
    return required


def not_safe_routed() -> ColumnElement[bool]:
    """The condition that a withdrawal has no Safe payout that is not settled."""
    return not_(
        exists().where(
            SafeTransaction.withdrawal_id == Withdrawal.id,
            SafeTransaction.state.in_(UNSETTLED),
        )
    )


def routed_amount(session: Session, chain: str, token_id: int) -> int:
    """What the vault still owes the withdrawals of the token routed to the Safe and not yet
    in a payout transaction (beside the open payouts). Read from the Safe payouts not settled
    (few), never by scanning withdrawals."""
    total = session.scalar(
        select(func.coalesce(func.sum(Withdrawal.amount), 0))
        .select_from(SafeTransaction)
        .join(Withdrawal, Withdrawal.id == SafeTransaction.withdrawal_id)
        .where(
            SafeTransaction.chain == chain,
            SafeTransaction.state.in_(UNSETTLED),
            Withdrawal.token_id == token_id,
            Withdrawal.payout_tx_id.is_(None),
        )
    )
    return int(total or 0)


class SafeRouter:
    """Routes Safe-bound withdrawals of one chain to the treasury Safe (see the module
    docstring)."""

    def __init__(self, sessions: sessionmaker[Session], chain: str) -> None:
        self.sessions = sessions
        self.chain = chain

    def rules(self) -> SafeRules:
        with self.sessions() as session:
            return SafeRules.load(session, self.chain)

    def short_of_approvals(self, rows: Sequence[Withdrawal], threshold: int) -> list[Withdrawal]:
        """Those of `rows` without the Safe's threshold of distinct approvers recorded (an
        approval request APPROVED by at least `threshold` operators other than the creator)."""
        with self.sessions() as session:
            tallies = approval_tallies(session, [r.id for r in rows])
        short: list[Withdrawal] = []
        for row in rows:
            tally = tallies.get(row.id)
            if tally is None or tally.outcome != APPROVED or tally.approved < threshold:
                short.append(row)
        return short

    def route(self, row: Withdrawal) -> str | None:
        """Record a PENDING Safe payout of `row` (as read) and give it its payout number if it
        has none, in one transaction; the Safe transaction's id, or None when the withdrawal
        moved meanwhile or already has a Safe payout not settled."""
        safe_tx_id = new_ulid()
        now = utcnow()
        with self.sessions.begin() as session:
            vault = session.scalars(
                select(PayoutVault).where(PayoutVault.chain == self.chain).with_for_update()
            ).one()
            number = row.payout_number
            fresh = number is None
            if number is None:
                number = vault.next_number
            result = session.execute(
                update(Withdrawal)
                .where(
                    Withdrawal.id == row.id,
                    Withdrawal.version == row.version,
                    Withdrawal.payout_tx_id.is_(None),
                    Withdrawal.state.in_([State.QUEUED.value, State.ON_HOLD.value]),
                    (
                        Withdrawal.payout_number.is_(None)
                        if fresh
                        else Withdrawal.payout_number == number
                    ),
                    not_safe_routed(),
                )
                .values(payout_number=number)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            if fresh:
                vault.next_number += 1
            session.add(
                SafeTransaction(
                    id=safe_tx_id,
                    chain=self.chain,
                    purpose=SafePurpose.PAYOUT.value,
                    change_id=None,
                    kind=KIND,
                    payload=json.dumps(
                        {"withdrawal_id": row.id, "payout_number": number}, sort_keys=True
                    ),
                    state=SafeTxState.PENDING.value,
                    withdrawal_id=row.id,
                    create_time=now,
                    update_time=now,
                )
            )
        log.info(
            "withdrawal routed to the treasury Safe",
            extra={"withdrawal_id": row.id, "safe_tx_id": safe_tx_id, "payout_number": number},
        )
        return safe_tx_id


@dataclass(frozen=True)
class SafePayoutCall:
    """The vault call a Safe payout makes, and the item it pays."""

    token: str  # lowercase
    payment: Payment
    calldata: bytes


def payable_for_safe(row: Withdrawal) -> bool:
    """Whether a routed withdrawal may still be paid: QUEUED, or ON_HOLD for a reason that
    resumes by itself, in no payout transaction, with its payout number."""
    waiting = row.state == State.QUEUED or (
        row.state == State.ON_HOLD and row.state_reason in RESUMABLE
    )
    return waiting and row.payout_tx_id is None and row.payout_number is not None


def safe_payout_call(session: Session, op: SafeTransaction) -> tuple[Withdrawal, SafePayoutCall]:
    """The withdrawal a PAYOUT row pays and the `vault.payout` call paying it under its payout
    number; ValueError when it cannot be built (no withdrawal, no number, no token address)."""
    row = session.get(Withdrawal, op.withdrawal_id) if op.withdrawal_id else None
    if row is None or row.payout_number is None:
        raise ValueError(f"Safe payout {op.id} names no withdrawal with a payout number")
    token = session.get(Token, row.token_id)
    if token is None or not token.contract_address:
        raise ValueError(f"withdrawal {row.id}'s token has no contract address")
    payment = Payment(row.payout_number, row.recipient, row.amount)
    address = token.contract_address.lower()
    return row, SafePayoutCall(address, payment, encode_payout(address, [payment]))


def link_withdrawal(session: Session, op: SafeTransaction, payout_id: str) -> bool:
    """Link the withdrawal of a PAYOUT row to the hot wallet's `safe_exec` payout row
    `payout_id` and store its item (in the transaction reserving the row); False when the
    withdrawal is no longer payable as routed (nothing is then reserved)."""
    row, call = safe_payout_call(session, op)
    if not payable_for_safe(row):
        return False
    result = session.execute(
        update(Withdrawal)
        .where(
            Withdrawal.id == row.id,
            Withdrawal.version == row.version,
            Withdrawal.payout_tx_id.is_(None),
            Withdrawal.payout_number == call.payment.number,
        )
        .values(payout_tx_id=payout_id)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        insert(PayoutItem),
        [
            {
                "payout_tx_id": payout_id,
                "withdrawal_id": row.id,
                "payout_number": call.payment.number,
                "recipient": call.payment.recipient,
                "amount": call.payment.amount,
                "outcome": "",
                "outcome_reason": "",
            }
        ],
    )
    return True
