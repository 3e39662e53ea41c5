"""Did every withdrawal get paid exactly once, for exactly its amount? Asked of the chain first.

The chaos harness and the benchmarks end here. The chain is the only witness that cannot be
wrong about money, so the payment facts come from it alone: every ERC-20 `Transfer` log of
the token (from block 0 to the head) whose recipient is one of the submitted (fresh, unique)
recipients, summed and counted per recipient, and optionally each recipient's `balanceOf`.
The PayoutVault's `PaymentSkipped` and `PaymentFailed` logs are counted too: in normal
operation and under chaos the bitmap must never have had to skip anything.

Then the database must agree: a withdrawal is terminal, COMPLETED exactly when the chain paid it
(once, the full amount), and REJECTED/CANCELLED/FAILED exactly when the chain paid nothing.

A verdict `ok` means: no double payment, no wrong amount, no lost withdrawal (one the client
was told was accepted that is not terminal, or terminal but inconsistent with the chain), and
no contract skip.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from withdrawal_shared.db.models import PayoutTransaction, Withdrawal, WithdrawalAudit
from withdrawal_shared.states import TERMINAL, PayoutState, State

TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()
SKIPPED_TOPIC = Web3.keccak(text="PaymentSkipped(uint64)").to_0x_hex()
FAILED_TOPIC = Web3.keccak(text="PaymentFailed(uint64,bytes)").to_0x_hex()
LOG_CHUNK_BLOCKS = 2_000
UNPAID_STATES = frozenset({State.REJECTED, State.CANCELLED, State.FAILED})


@dataclass(frozen=True)
class Submitted:
    """A withdrawal the client was told was accepted."""

    withdrawal_id: str
    recipient: str  # lowercase 0x address, unique to this withdrawal
    amount: int


@dataclass
class Verdict:
    submitted: int = 0
    paid_once: int = 0
    double_paid: list[str] = field(default_factory=list)
    wrong_amount: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Not terminal, missing from the database, or terminal but contradicting the chain."""
    unpaid_terminal: int = 0
    states: Counter[str] = field(default_factory=Counter)
    contract_skips: int = 0
    contract_item_failures: int = 0
    noop_nonces: int = 0
    replacements: int = 0
    reorged_moves: int = 0
    """Audited state changes caused by a reorganisation (withdrawals sent back by one)."""
    payouts_by_state: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.double_paid or self.wrong_amount or self.lost or self.contract_skips)

    def summary(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "paid_exactly_once": self.paid_once,
            "double_payments": len(self.double_paid),
            "wrong_amounts": len(self.wrong_amount),
            "lost_withdrawals": len(self.lost),
            "terminal_unpaid": self.unpaid_terminal,
            "contract_skips": self.contract_skips,
            "contract_item_failures": self.contract_item_failures,
            "noop_nonces": self.noop_nonces,
            "stuck_replacements": self.replacements,
            "reorged_moves": self.reorged_moves,
            "withdrawal_states": dict(sorted(self.states.items())),
            "payout_states": dict(sorted(self.payouts_by_state.items())),
            "examples": {
                "double_paid": self.double_paid[:5],
                "wrong_amount": self.wrong_amount[:5],
                "lost": self.lost[:5],
            },
        }


def _topic_address(topic: Any) -> str:
    raw = bytes(topic)
    return "0x" + raw[-20:].hex()


def _logs(w3: Web3, address: str, topic: str, to_block: int) -> Iterable[Any]:
    start = 0
    while start <= to_block:
        end = min(start + LOG_CHUNK_BLOCKS - 1, to_block)
        yield from w3.eth.get_logs(
            {
                "address": Web3.to_checksum_address(address),
                "topics": [topic],
                "fromBlock": start,
                "toBlock": end,
            }
        )
        start = end + 1


def transfers_to(w3: Web3, token: str, recipients: set[str], to_block: int) -> dict[str, list[int]]:
    """Every Transfer of `token` to one of `recipients` up to `to_block`: amounts by recipient."""
    paid: dict[str, list[int]] = defaultdict(list)
    for entry in _logs(w3, token, TRANSFER_TOPIC, to_block):
        recipient = _topic_address(entry["topics"][2])
        if recipient in recipients:
            paid[recipient].append(int.from_bytes(bytes(entry["data"])[-32:], "big"))
    return paid


def count_logs(w3: Web3, address: str | None, topic: str, to_block: int) -> int:
    if address is None:
        return 0
    return sum(1 for _ in _logs(w3, address, topic, to_block))


def check_exactly_once(
    w3: Web3,
    sessions: sessionmaker[Session],
    token: str,
    vault: str | None,
    submitted: Sequence[Submitted],
    *,
    check_balances: bool = False,
) -> Verdict:
    verdict = Verdict(submitted=len(submitted))
    head = int(w3.eth.block_number)
    recipients = {s.recipient.lower() for s in submitted}
    if len(recipients) != len(submitted):
        raise ValueError("every submitted withdrawal must have a recipient of its own")
    paid = transfers_to(w3, token, recipients, head)
    verdict.contract_skips = count_logs(w3, vault, SKIPPED_TOPIC, head)
    verdict.contract_item_failures = count_logs(w3, vault, FAILED_TOPIC, head)

    states = _withdrawal_states(sessions, [s.withdrawal_id for s in submitted])
    contract = None
    if check_balances:
        from withdrawal_shared.chain.contracts import stablecoin_contract

        contract = stablecoin_contract(w3, Web3.to_checksum_address(token))
    for item in submitted:
        amounts = paid.get(item.recipient.lower(), [])
        state = states.get(item.withdrawal_id)
        verdict.states[state or "MISSING"] += 1
        if len(amounts) > 1:
            verdict.double_paid.append(item.withdrawal_id)
            continue
        if amounts and amounts[0] != item.amount:
            verdict.wrong_amount.append(item.withdrawal_id)
            continue
        if contract is not None:
            balance = int(
                contract.functions.balanceOf(Web3.to_checksum_address(item.recipient)).call()
            )
            if balance != sum(amounts):
                verdict.wrong_amount.append(item.withdrawal_id)
                continue
        if state is None or State(state) not in TERMINAL:
            verdict.lost.append(item.withdrawal_id)
        elif amounts and state == State.COMPLETED:
            verdict.paid_once += 1
        elif not amounts and State(state) in UNPAID_STATES:
            verdict.unpaid_terminal += 1
        else:  # COMPLETED but unpaid, or paid but the database says it was not
            verdict.lost.append(item.withdrawal_id)

    with sessions() as session:
        verdict.payouts_by_state = Counter(
            dict(
                session.execute(
                    select(PayoutTransaction.state, func.count()).group_by(PayoutTransaction.state)
                ).all()
            )
        )
        verdict.noop_nonces = int(
            session.scalar(select(func.count()).where(PayoutTransaction.kind == "nonce_release"))
            or 0
        )
        verdict.reorged_moves = int(
            session.scalar(select(func.count()).where(WithdrawalAudit.reorged.is_(True))) or 0
        )
        verdict.replacements = int(
            session.scalar(select(func.count()).where(PayoutTransaction.replaces_id.is_not(None)))
            or 0
        )
    return verdict


def _withdrawal_states(sessions: sessionmaker[Session], ids: Sequence[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    with sessions() as session:
        for start in range(0, len(ids), 1_000):
            chunk = ids[start : start + 1_000]
            states.update(
                dict(
                    session.execute(
                        select(Withdrawal.id, Withdrawal.state).where(Withdrawal.id.in_(chunk))
                    ).all()
                )
            )
    return states


def non_terminal_count(sessions: sessionmaker[Session]) -> int:
    """Withdrawals not yet terminal, and payouts not yet settled (quiescence is both at 0)."""
    with sessions() as session:
        open_withdrawals = session.scalar(
            select(func.count()).where(Withdrawal.state.not_in([s.value for s in TERMINAL]))
        )
        open_payouts = session.scalar(
            select(func.count()).where(
                PayoutTransaction.state.in_(
                    [
                        PayoutState.RESERVED,
                        PayoutState.SIGNED,
                        PayoutState.BROADCAST,
                        PayoutState.MINED,
                    ]
                )
            )
        )
    return int(open_withdrawals or 0) + int(open_payouts or 0)


__all__ = ["Submitted", "Verdict", "check_exactly_once", "non_terminal_count", "transfers_to"]
