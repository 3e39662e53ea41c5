"""A withdrawal from request to COMPLETED on the real pipeline (keystore signer), read back
from the chain, plus the ways it must not complete at once: a reverted payout (paid again
once settled) and an unfunded wallet."""

from __future__ import annotations

import json
import threading
import uuid

import httpx
from sqlalchemy import func, select
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import mine, set_automine, set_balance, set_interval_mining
from devstack.stablecoin import unpause
from tests.support.pipeline import Pipeline
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.chain.contracts import stablecoin_contract
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutTransaction, SignerLedgerItem, Withdrawal
from withdrawal_shared.holds import HoldReason

S = withdrawal_pb2
LIFECYCLE = [
    "STATE_RECEIVED",
    "STATE_VALIDATED",
    "STATE_QUEUED",
    "STATE_SIGNED",
    "STATE_BROADCAST",
    "STATE_CONFIRMING",
    "STATE_COMPLETED",
]


def watch_all_grpc(pipeline: Pipeline, name: str, into: list[str]) -> threading.Thread:
    def run() -> None:
        for event in pipeline.gateway.stub.WatchWithdrawal(
            withdrawal_pb2.WatchWithdrawalRequest(name=name, resume_after_version=0),
            metadata=pipeline.partner.metadata,
            timeout=90,
        ):
            into.append(withdrawal_pb2.State.Name(event.withdrawal.state))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_grpc_withdrawal_completes_and_pays_exactly_once(keystore_pipeline: Pipeline) -> None:
    p = keystore_pipeline
    recipient = fresh_address()
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount="12.5", recipient=recipient), metadata=p.partner.metadata
    )
    seen: list[str] = []
    watcher = watch_all_grpc(p, created.name, seen)
    done = p.wait_for_state(created.name, S.STATE_COMPLETED, timeout=90)
    watcher.join(30)
    assert p.token_balance(recipient) == 12_500_000  # read from the chain
    assert done.transaction_hash.startswith("0x") and len(done.transaction_hash) == 66
    assert done.fee and done.fee_currency == "POL"
    assert done.confirmations >= 5
    assert seen == LIFECYCLE
    receipt = p.w3.eth.get_transaction_receipt(done.transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert done.block_number == receipt["blockNumber"]
    trail = p.gateway.stub.ListStateChanges(
        withdrawal_pb2.ListStateChangesRequest(parent=created.name), metadata=p.partner.metadata
    )
    assert [withdrawal_pb2.State.Name(c.to_state) for c in trail.state_changes] == LIFECYCLE
    assert trail.state_changes[-1].transaction_hash == done.transaction_hash


def test_rest_withdrawal_completes_and_watch_streams_every_state(
    keystore_pipeline: Pipeline,
) -> None:
    p = keystore_pipeline
    recipient = fresh_address()
    headers = {**p.partner.headers, "Idempotency-Key": str(uuid.uuid4())}
    created = httpx.post(
        f"{p.gateway.base_url}/v1/withdrawals",
        json={"token": "USDC", "recipientAddress": recipient, "amount": "0.000001"},
        headers=headers,
    ).json()
    states: list[str] = []
    with httpx.stream(
        "GET",
        f"{p.gateway.base_url}/v1/{created['name']}:watch",
        params={"resumeAfterVersion": 0},
        headers=p.partner.headers,
        timeout=90,
    ) as stream:
        for line in stream.iter_lines():
            if line:
                states.append(json.loads(line)["withdrawal"]["state"])
    assert states == LIFECYCLE
    assert p.token_balance(recipient) == 1


def test_reverted_payout_is_paid_again_at_a_new_nonce_once_settled(
    keystore_pipeline: Pipeline,
) -> None:
    """A payout that reverts pays nothing. At the confirmation depth the withdrawal goes
    ON_HOLD PAYOUT_REVERTED; the processor pays it again once the transfer would succeed, at
    a new nonce, which the signer allows only because the old nonce is consumed by a
    transaction that paid nothing. The recipient is paid exactly once."""
    p = keystore_pipeline
    w3 = p.w3
    token = stablecoin_contract(w3, p.boot.token_address)
    owner = p.anvil.accounts[0]
    recipient = fresh_address()
    set_interval_mining(w3, 0)
    set_automine(w3, False)
    try:
        created = p.gateway.stub.CreateWithdrawal(
            create_request(amount="3", recipient=recipient), metadata=p.partner.metadata
        )
        p.wait_for_state(created.name, S.STATE_BROADCAST, timeout=30)
        # The token is paused in the same block, ahead of the payout (a higher tip).
        token.functions.pause().transact(
            {
                "from": owner.address,
                "maxPriorityFeePerGas": Web3.to_wei(500, "gwei"),
                "maxFeePerGas": Web3.to_wei(2000, "gwei"),
            }
        )
        mine(w3, 1)
        mine(w3, 6)
        held = p.wait_for_state(created.name, S.STATE_ON_HOLD, timeout=30)
    finally:
        set_automine(w3, True)
        set_interval_mining(w3, 1)
    assert p.token_balance(recipient) == 0
    # The API shows the registry's message for the hold, with this payout's revert reason.
    assert held.state_reason == HoldReason.PAYOUT_REVERTED
    assert held.state_message.startswith(HoldReason.PAYOUT_REVERTED.meaning)
    assert "EnforcedPause" in held.state_message
    assert held.state_message.endswith(HoldReason.PAYOUT_REVERTED.action)
    unpause(w3, p.boot.token_address, owner.private_key)
    done = p.wait_for_state(created.name, S.STATE_COMPLETED, timeout=60)
    assert p.token_balance(recipient) == 3_000_000  # paid once, by the second transaction

    engine = make_engine(p.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            withdrawal_id = done.name.rsplit("/", 1)[-1]
            payouts = session.execute(
                select(PayoutTransaction.state, PayoutTransaction.nonce, PayoutTransaction.tx_hash)
                .join(SignerLedgerItem, SignerLedgerItem.tx_hash == PayoutTransaction.tx_hash)
                .where(SignerLedgerItem.withdrawal_id == withdrawal_id)
                .order_by(PayoutTransaction.nonce)
            ).all()
            reasons = session.scalars(
                select(Withdrawal.state_reason).where(Withdrawal.id == withdrawal_id)
            ).all()
    finally:
        engine.dispose()
    assert [row.state for row in payouts] == ["REVERTED", "CONFIRMED"]
    assert payouts[0].nonce < payouts[1].nonce
    assert payouts[1].tx_hash == done.transaction_hash
    assert reasons == ["CONFIRMED"]


def test_unfunded_hot_wallet_holds_then_completes_each_once(keystore_pipeline: Pipeline) -> None:
    p = keystore_pipeline
    w3 = p.w3
    wallet = Web3.to_checksum_address(p.hot_wallet)
    funded = w3.eth.get_balance(wallet)
    set_balance(w3, wallet, 0)  # type: ignore[arg-type]
    recipients = [fresh_address(), fresh_address()]
    names = [
        p.gateway.stub.CreateWithdrawal(
            create_request(amount="7", recipient=r), metadata=p.partner.metadata
        ).name
        for r in recipients
    ]
    for name in names:
        held = p.wait_for_state(name, S.STATE_ON_HOLD, timeout=30)
        assert held.state_reason == HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS
        assert held.state_message == HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS.state_message()
    set_balance(w3, wallet, funded)
    for name in names:
        p.wait_for_state(name, S.STATE_COMPLETED, timeout=90)
    assert [p.token_balance(r) for r in recipients] == [7_000_000, 7_000_000]
    ids = [name.split("/")[1] for name in names]
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            for withdrawal_id in ids:
                signed = session.scalar(
                    select(func.count())
                    .select_from(SignerLedgerItem)
                    .where(SignerLedgerItem.withdrawal_id == withdrawal_id)
                )
                assert signed == 1
                row = session.get(Withdrawal, withdrawal_id)
                assert row is not None and row.payout_tx_id is not None
                payout = session.get(PayoutTransaction, row.payout_tx_id)
                assert payout is not None and payout.state == "CONFIRMED"
    finally:
        engine.dispose()
