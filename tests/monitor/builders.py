"""Doing by hand what the processor does: withdrawals moved to SIGNED then BROADCAST, paid by
a real signed ERC-20 transfer whose raw bytes are stored in a `payout_transactions` row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from devstack.anvil import DevAccount
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.chain.contracts import stablecoin_contract
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db.models import PayoutTransaction, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import move, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, State

ACTOR = "test:processor"
GWEI = 10**9


@dataclass(frozen=True)
class ChainSetup:
    w3: Web3
    sessions: sessionmaker[Session]
    owner: DevAccount
    payer: DevAccount
    token: ChecksumAddress
    token_id: int
    partner_id: str


@dataclass(frozen=True)
class Payout:
    id: str
    tx_hash: str
    raw_tx: bytes
    recipient: ChecksumAddress
    withdrawal_ids: tuple[str, ...]


def fresh_address() -> ChecksumAddress:
    return Web3.to_checksum_address(Account.create().address)


def _new_withdrawal(session: Session, setup: ChainSetup, recipient: str, amount: int) -> str:
    """A QUEUED withdrawal of the setup's token (the processor's part up to signing)."""
    return add_withdrawal(
        session,
        partner_id=setup.partner_id,
        token_id=setup.token_id,
        recipient=recipient,
        amount=amount,
        actor=ACTOR,
        to=State.QUEUED,
    )


def pay(
    setup: ChainSetup,
    amounts: Sequence[int],
    *,
    gas: int | None = None,
    send: bool = True,
) -> Payout:
    """Withdrawals of `amounts` to one fresh recipient, all paid by ONE transfer of their sum
    (stored SIGNED, sent, then BROADCAST, as the processor does)."""
    w3, payer = setup.w3, setup.payer
    recipient = fresh_address()
    with setup.sessions.begin() as session:
        ids = tuple(_new_withdrawal(session, setup, recipient, a) for a in amounts)

    function = stablecoin_contract(w3, setup.token).functions.transfer(recipient, sum(amounts))
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    params = {
        "chainId": w3.eth.chain_id,
        "from": payer.address,
        "to": setup.token,
        "data": function._encode_transaction_data(),
        "value": 0,
        "nonce": w3.eth.get_transaction_count(payer.address, "pending"),
        "maxPriorityFeePerGas": GWEI,
        "maxFeePerGas": 2 * base_fee + GWEI,
    }
    params["gas"] = gas if gas is not None else w3.eth.estimate_gas(params)  # type: ignore[arg-type]
    signed = Account.sign_transaction(params, payer.private_key)
    raw = bytes(signed.raw_transaction)
    tx_hash = "0x" + bytes(signed.hash).hex()

    payout_id = new_ulid()
    now = utcnow()
    with setup.sessions.begin() as session:
        session.add(
            PayoutTransaction(
                id=payout_id,
                chain="polygon",
                wallet=payer.address.lower(),
                nonce=int(params["nonce"]),
                to_address=setup.token.lower(),
                raw_tx=raw,
                tx_hash=tx_hash,
                gas_limit=int(params["gas"]),
                max_fee_per_gas=int(params["maxFeePerGas"]),
                max_priority_fee_per_gas=GWEI,
                state=PayoutState.SIGNED,
                broadcast_count=0,
                block_number=None,
                block_hash=None,
                gas_used=None,
                effective_gas_price=None,
                fee_wei=None,
                revert_reason="",
                create_time=now,
                update_time=now,
            )
        )
        session.flush()
        for row in _withdrawals(session, ids):
            move(
                session,
                row,
                State.SIGNED,
                actor=ACTOR,
                reason="SIGNED",
                tx_hash=tx_hash,
                payout_tx_id=payout_id,
            )
    if send:
        w3.eth.send_raw_transaction(raw)
    with setup.sessions.begin() as session:
        payout = session.get_one(PayoutTransaction, payout_id)
        payout.state = PayoutState.BROADCAST
        payout.broadcast_count = 1 if send else 0
        for row in _withdrawals(session, ids):
            move(session, row, State.BROADCAST, actor=ACTOR, reason="BROADCAST")
    return Payout(payout_id, tx_hash, raw, recipient, ids)


def _withdrawals(session: Session, ids: Sequence[str]) -> Sequence[Withdrawal]:
    return session.scalars(
        select(Withdrawal).where(Withdrawal.id.in_(ids)).order_by(Withdrawal.id)
    ).all()


def withdrawals(setup: ChainSetup, payout: Payout) -> list[Withdrawal]:
    with setup.sessions() as session:
        return list(_withdrawals(session, payout.withdrawal_ids))


def payout_row(setup: ChainSetup, payout: Payout) -> PayoutTransaction:
    with setup.sessions() as session:
        return session.get_one(PayoutTransaction, payout.id)


def audit_trail(setup: ChainSetup, withdrawal_id: str) -> list[WithdrawalAudit]:
    with setup.sessions() as session:
        return list(
            session.scalars(
                select(WithdrawalAudit)
                .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
                .order_by(WithdrawalAudit.version)
            )
        )
