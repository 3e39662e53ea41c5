"""Stuck payout transactions (a replacement keeps the same items), on
anvil, MariaDB and Redis through the PayoutVault: a payout not mined 3 blocks after its
broadcast is replaced at the same nonce with the same payload and fees raised by at least 10%;
whichever hash mines completes the withdrawal once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import drop_transaction, mine, set_interval_mining
from svc_processor.replacer import raised
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.signers import keystore_signer
from tests.support.withdrawals import payouts_paying
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.states import PayoutState

S = withdrawal_pb2
STUCK_AFTER_BLOCKS = 3


@pytest.fixture(scope="module")
def stuck_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The vault pipeline (as `vault_pipeline`), replacing payouts stuck for 3 blocks."""
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            e2e_database,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=50,
            batch_max_wait_seconds=0.5,
            stuck_after_blocks=STUCK_AFTER_BLOCKS,
            replacement_bump_pct=15,
        ) as pipeline,
    ):
        yield pipeline


def _payouts(p: Pipeline, withdrawal_id: str) -> list[PayoutTransaction]:
    """Every payout row paying the withdrawal, oldest first."""
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return payouts_paying(session, withdrawal_id)
    finally:
        engine.dispose()


def _withdrawal(p: Pipeline, withdrawal_id: str) -> Withdrawal:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.get(Withdrawal, withdrawal_id)
            assert row is not None
            return row
    finally:
        engine.dispose()


def _items(p: Pipeline, payout_id: str) -> list[PayoutItem]:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return list(
                session.scalars(select(PayoutItem).where(PayoutItem.payout_tx_id == payout_id))
            )
    finally:
        engine.dispose()


def _broadcast_payout(p: Pipeline, name: str) -> PayoutTransaction:
    p.wait_for_state(name, S.STATE_BROADCAST, timeout=30)
    rows = _payouts(p, name.split("/")[1])
    assert len(rows) == 1 and rows[0].state == PayoutState.BROADCAST, rows
    return rows[0]


def _replaced(p: Pipeline, withdrawal_id: str) -> list[PayoutTransaction]:
    def probe() -> list[PayoutTransaction] | None:
        rows = _payouts(p, withdrawal_id)
        done = len(rows) == 2 and rows[1].state == PayoutState.BROADCAST
        return rows if done else None

    return wait_until(probe, 30, lambda: f"never replaced: {_payouts(p, withdrawal_id)}")


def _assert_replacement(old: PayoutTransaction, new: PayoutTransaction) -> None:
    assert (new.wallet, new.nonce) == (old.wallet, old.nonce)
    assert new.replaces_id == old.id
    assert (new.to_address, new.calldata, new.gas_limit, new.kind) == (
        old.to_address,
        old.calldata,
        old.gas_limit,
        old.kind,
    )
    assert new.tx_hash != old.tx_hash
    assert new.max_fee_per_gas >= raised(old.max_fee_per_gas, 10)
    assert new.max_priority_fee_per_gas >= raised(old.max_priority_fee_per_gas, 10)


def test_stuck_payout_is_replaced_at_its_nonce_and_pays_once(stuck_pipeline: Pipeline) -> None:
    p = stuck_pipeline
    recipient = fresh_address()
    set_interval_mining(p.w3, 0)
    try:
        name = p.gateway.stub.CreateWithdrawal(
            create_request(amount="3", recipient=recipient), metadata=p.partner.metadata
        ).name
        first = _broadcast_payout(p, name)
        # The node forgets it: it can never mine, and the payout is stuck.
        drop_transaction(p.w3, HexStr(first.tx_hash))
    finally:
        set_interval_mining(p.w3, 1)
    done = p.wait_for_state(name, S.STATE_COMPLETED, timeout=90)
    withdrawal_id = name.split("/")[1]
    rows = _payouts(p, withdrawal_id)
    assert len(rows) == 2, rows
    old, new = rows
    _assert_replacement(old, new)
    assert (old.state, new.state) == (PayoutState.DROPPED, PayoutState.CONFIRMED)
    assert new.broadcast_block is not None and old.broadcast_block is not None
    assert new.broadcast_block >= old.broadcast_block + STUCK_AFTER_BLOCKS
    assert done.transaction_hash == new.tx_hash
    assert _withdrawal(p, withdrawal_id).payout_tx_id == new.id
    assert [i.outcome for i in _items(p, new.id)] == ["PAID"]
    assert p.token_balance(recipient) == 3_000_000  # paid once
    assert p.w3.eth.get_transaction_receipt(HexStr(new.tx_hash))["status"] == 1


def test_the_old_hash_mining_after_its_replacement_completes_it_once(
    stuck_pipeline: Pipeline,
) -> None:
    p = stuck_pipeline
    recipient = fresh_address()
    set_interval_mining(p.w3, 0)
    try:
        name = p.gateway.stub.CreateWithdrawal(
            create_request(amount="4", recipient=recipient), metadata=p.partner.metadata
        ).name
        withdrawal_id = name.split("/")[1]
        first = _broadcast_payout(p, name)
        drop_transaction(p.w3, HexStr(first.tx_hash))
        mine(p.w3, STUCK_AFTER_BLOCKS)  # empty blocks: the processor replaces it
        old, new = _replaced(p, withdrawal_id)
        assert old.id == first.id and old.state == PayoutState.REPLACED
        _assert_replacement(old, new)
        assert _withdrawal(p, withdrawal_id).payout_tx_id == new.id
        # The replacement never mines; the old signed bytes do.
        drop_transaction(p.w3, HexStr(new.tx_hash))
        sent = p.w3.eth.send_raw_transaction(first.raw_tx)
        assert Web3.to_hex(sent) == first.tx_hash
        mine(p.w3, 1)
    finally:
        set_interval_mining(p.w3, 1)
    done = p.wait_for_state(name, S.STATE_COMPLETED, timeout=90)
    assert done.transaction_hash == first.tx_hash
    old, new = _payouts(p, withdrawal_id)
    assert (old.state, new.state) == (PayoutState.CONFIRMED, PayoutState.DROPPED)
    assert old.block_number is not None and old.fee_wei is not None
    row = _withdrawal(p, withdrawal_id)
    assert (row.payout_tx_id, row.tx_hash) == (old.id, old.tx_hash)
    assert [i.outcome for i in _items(p, old.id)] == ["PAID"]
    assert [i.outcome for i in _items(p, new.id)] == [""]
    assert p.token_balance(recipient) == 4_000_000  # paid once
