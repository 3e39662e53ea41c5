"""The emergency lane end to end, on anvil, MariaDB and Redis through the PayoutVault: a signer
holding two keystore keys, the second registered as the EMERGENCY-role hot wallet. An
EMERGENCY withdrawal created while STANDARD ones wait in their batch is paid at once from the
emergency wallet (the chain says who sent it), exactly once; a key without the `emergency`
scope is refused and nothing is stored; a stuck EMERGENCY payout is replaced at its nonce after
one block."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import drop_transaction, mine, set_interval_mining
from svc_processor.replacer import raised
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address, rich_error
from tests.support.signers import keystore_signer
from tests.support.withdrawals import payouts_paying
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutTransaction, Withdrawal
from withdrawal_shared.states import PayoutState, Priority

S = withdrawal_pb2


@pytest.fixture(scope="module")
def emergency_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The vault pipeline with one standard and one EMERGENCY hot wallet; STANDARD batches
    wait up to 30 s for company, so they sit QUEUED while the emergency one is paid."""
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystores"), keys=2) as target,
        running_pipeline(
            e2e_database,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=50,
            batch_max_wait_seconds=30,
            emergency_wallets=1,
        ) as pipeline,
    ):
        assert len(pipeline.boot.hot_wallets) == 1
        assert len(pipeline.boot.emergency_wallets) == 1
        yield pipeline


def _payouts(p: Pipeline, withdrawal_id: str) -> list[PayoutTransaction]:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return payouts_paying(session, withdrawal_id)
    finally:
        engine.dispose()


def _count(p: Pipeline, partner_id: str) -> int:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Withdrawal)
                    .where(Withdrawal.partner_id == partner_id)
                )
                or 0
            )
    finally:
        engine.dispose()


def _sender(p: Pipeline, tx_hash: str) -> str:
    return str(p.w3.eth.get_transaction(HexStr(tx_hash))["from"]).lower()


def test_emergency_is_paid_from_the_emergency_wallet_while_standard_ones_wait(
    emergency_pipeline: Pipeline,
) -> None:
    p = emergency_pipeline
    standard = [
        p.gateway.stub.CreateWithdrawal(create_request(amount="1"), metadata=p.partner.metadata)
        for _ in range(3)
    ]
    for made in standard:
        p.wait_for_state(made.name, S.STATE_QUEUED, timeout=30)
    recipient = fresh_address()
    urgent = p.gateway.stub.CreateWithdrawal(
        create_request(amount="7", recipient=recipient, priority=S.PRIORITY_EMERGENCY),
        metadata=p.partner.metadata,
    )
    done = p.wait_for_state(urgent.name, S.STATE_COMPLETED, timeout=60)
    emergency_wallet = p.boot.emergency_wallets[0].lower()
    assert _sender(p, done.transaction_hash) == emergency_wallet
    (payout,) = _payouts(p, urgent.name.split("/")[1])
    assert payout.wallet == emergency_wallet and payout.priority == Priority.EMERGENCY
    assert payout.state == PayoutState.CONFIRMED
    assert p.token_balance(recipient) == 7_000_000  # paid once
    # The STANDARD ones were not taken along: they still wait for their batch, and whatever
    # pays them later is never the emergency wallet.
    for made in standard:
        assert p.get(made.name).state == S.STATE_QUEUED
        assert all(r.wallet != emergency_wallet for r in _payouts(p, made.name.split("/")[1]))


def test_a_key_without_the_emergency_scope_is_refused_and_nothing_is_stored(
    emergency_pipeline: Pipeline,
) -> None:
    p = emergency_pipeline
    plain = p.gateway.add_partner("e2e-plain")
    with pytest.raises(grpc.RpcError) as caught:
        p.gateway.stub.CreateWithdrawal(
            create_request(priority=S.PRIORITY_EMERGENCY), metadata=plain.metadata
        )
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason, info.metadata["scope"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_MISSING",
        "emergency",
    )
    assert _count(p, plain.id) == 0


def test_a_stuck_emergency_payout_is_replaced_after_one_block(
    emergency_pipeline: Pipeline,
) -> None:
    p = emergency_pipeline
    recipient = fresh_address()
    set_interval_mining(p.w3, 0)
    try:
        name = p.gateway.stub.CreateWithdrawal(
            create_request(amount="5", recipient=recipient, priority=S.PRIORITY_EMERGENCY),
            metadata=p.partner.metadata,
        ).name
        withdrawal_id = name.split("/")[1]
        p.wait_for_state(name, S.STATE_BROADCAST, timeout=30)
        (first,) = _payouts(p, withdrawal_id)
        drop_transaction(p.w3, HexStr(first.tx_hash))  # it can never mine: stuck
        mine(p.w3, 1)  # one empty block

        def replaced() -> list[PayoutTransaction] | None:
            rows = _payouts(p, withdrawal_id)
            return rows if len(rows) == 2 and rows[1].state == PayoutState.BROADCAST else None

        old, new = wait_until(replaced, 30, lambda: f"never replaced: {_payouts(p, withdrawal_id)}")
    finally:
        set_interval_mining(p.w3, 1)
    assert old.state == PayoutState.REPLACED and new.replaces_id == old.id
    assert (new.wallet, new.nonce) == (old.wallet, old.nonce)
    assert new.wallet == p.boot.emergency_wallets[0].lower()
    assert new.priority == Priority.EMERGENCY
    assert old.broadcast_block is not None and new.broadcast_block is not None
    assert new.broadcast_block - old.broadcast_block < 5  # not the standard 5 blocks
    assert new.max_priority_fee_per_gas >= raised(old.max_priority_fee_per_gas, 10)
    assert new.max_fee_per_gas >= raised(old.max_fee_per_gas, 10)
    done = p.wait_for_state(name, S.STATE_COMPLETED, timeout=60)
    assert done.transaction_hash == new.tx_hash
    assert _sender(p, new.tx_hash) == Web3.to_checksum_address(new.wallet).lower()
    assert p.token_balance(recipient) == 5_000_000  # paid once
