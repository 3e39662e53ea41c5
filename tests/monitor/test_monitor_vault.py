"""The monitor settles PayoutVault payouts item by item: a number the vault skips as already
paid is matched to the payout that paid it (and counted), while the rest complete."""

from __future__ import annotations

from eth_account import Account
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from devstack.anvil import mine
from devstack.vault import deploy_payout_vault, fund_vault, send_payout, set_operator
from svc_monitor.follower import ChainFollower
from tests.monitor.builders import ChainSetup, _new_withdrawal, fresh_address
from withdrawal_shared.chain.payout import Payment, encode_payout
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import move, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, State

GWEI = 10**9


def _record(
    session: Session,
    *,
    payout_id: str,
    setup: ChainSetup,
    vault: str,
    nonce: int,
    raw: bytes,
    tx_hash: str,
    state: PayoutState,
    items: list[tuple[str, Payment, str]],
) -> None:
    now = utcnow()
    session.add(
        PayoutTransaction(
            id=payout_id,
            chain="polygon",
            wallet=setup.payer.address.lower(),
            nonce=nonce,
            to_address=vault.lower(),
            raw_tx=raw,
            tx_hash=tx_hash,
            gas_limit=1_000_000,
            max_fee_per_gas=100 * GWEI,
            max_priority_fee_per_gas=GWEI,
            state=state,
            broadcast_count=1,
            block_number=None,
            block_hash=None,
            gas_used=None,
            effective_gas_price=None,
            fee_wei=None,
            revert_reason="",
            create_time=now,
            update_time=now,
            kind="vault",
        )
    )
    session.flush()
    for withdrawal_id, payment, outcome in items:
        session.add(
            PayoutItem(
                payout_tx_id=payout_id,
                withdrawal_id=withdrawal_id,
                payout_number=payment.number,
                recipient=payment.recipient,
                amount=payment.amount,
                outcome=outcome,
                outcome_reason="",
            )
        )


def test_skipped_item_is_matched_to_the_payout_that_paid_it(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    w3, owner, payer = setup.w3, setup.owner, setup.payer
    vault = deploy_payout_vault(w3, owner.private_key, owner.address)
    set_operator(w3, vault, owner.private_key, payer.address)
    fund_vault(w3, setup.token, owner.private_key, vault, BaseUnits(10**9), mint_new=True)
    r1, r2 = fresh_address(), fresh_address()
    with setup.sessions.begin() as session:
        first = _new_withdrawal(session, setup, r1, 5_000_000)
        second = _new_withdrawal(session, setup, r2, 7_000_000)
    p1 = Payment(9_000_001, r1.lower(), 5_000_000)
    p2 = Payment(9_000_002, r2.lower(), 7_000_000)
    # Earlier payout A paid the first withdrawal (number 9_000_001).
    receipt_a = send_payout(w3, vault, payer.private_key, setup.token, [p1])
    tx_a = "0x" + bytes(receipt_a["transactionHash"]).hex()
    # Payout B carries it again, with the second one: the vault must skip it.
    nonce = w3.eth.get_transaction_count(payer.address, "pending")
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    signed = Account.sign_transaction(
        {
            "chainId": w3.eth.chain_id,
            "nonce": nonce,
            "to": vault,
            "data": encode_payout(setup.token, [p1, p2]),
            "value": 0,
            "gas": 1_000_000,
            "maxPriorityFeePerGas": GWEI,
            "maxFeePerGas": 2 * base_fee + GWEI,
        },
        payer.private_key,
    )
    tx_b = "0x" + bytes(signed.hash).hex()
    id_a, id_b = new_ulid(), new_ulid()
    with setup.sessions.begin() as session:
        _record(
            session,
            payout_id=id_a,
            setup=setup,
            vault=vault,
            nonce=nonce - 1,
            raw=b"\x02",
            tx_hash=tx_a,
            state=PayoutState.CONFIRMED,
            items=[(first, p1, "PAID")],
        )
        _record(
            session,
            payout_id=id_b,
            setup=setup,
            vault=vault,
            nonce=nonce,
            raw=bytes(signed.raw_transaction),
            tx_hash=tx_b,
            state=PayoutState.BROADCAST,
            items=[(first, p1, ""), (second, p2, "")],
        )
        for withdrawal_id in (first, second):
            row = session.get_one(Withdrawal, withdrawal_id)
            move(session, row, State.SIGNED, actor="test", payout_tx_id=id_b, tx_hash=tx_b)
            move(session, row, State.BROADCAST, actor="test")
    w3.eth.send_raw_transaction(signed.raw_transaction)
    mine(w3, 6)
    for _ in range(3):
        follower.poll_once()
    with setup.sessions() as session:
        a = session.get_one(Withdrawal, first)
        b = session.get_one(Withdrawal, second)
        outcomes = dict(
            session.execute(
                select(PayoutItem.withdrawal_id, PayoutItem.outcome).where(
                    PayoutItem.payout_tx_id == id_b
                )
            ).all()
        )
    assert outcomes == {first: "SKIPPED", second: "PAID"}
    assert (b.state, b.tx_hash) == (State.COMPLETED, tx_b)
    assert (a.state, a.tx_hash) == (State.COMPLETED, tx_a)  # paid by A, not B
    assert "skipped it as already paid" in a.state_message
    assert follower.skipped_as_paid == 1
    token = Web3.to_checksum_address(setup.token)
    assert w3.eth.call({"to": token, "data": "0x70a08231" + r1[2:].lower().rjust(64, "0")}) == (
        (5_000_000).to_bytes(32, "big")
    )  # paid once
