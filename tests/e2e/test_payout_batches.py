"""Payout transactions through the PayoutVault on the real pipeline: many withdrawals per
transaction, exact fee attribution, urgency closing a batch, and one failing item isolated
from the rest and retried under the same payout number without ever paying twice."""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import mine, set_automine, set_interval_mining
from devstack.vault import set_outflow_cap
from tests.support.pipeline import Pipeline
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.chain.payout import is_paid, payout_vault_contract
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal

S = withdrawal_pb2


def rows(p: Pipeline, names: list[str]) -> dict[str, Withdrawal]:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            found = session.scalars(
                select(Withdrawal).where(Withdrawal.id.in_([n.split("/")[1] for n in names]))
            ).all()
            return {w.id: w for w in found}
    finally:
        engine.dispose()


def test_a_hundred_withdrawals_go_out_in_two_payout_transactions(
    vault_pipeline: Pipeline,
) -> None:
    p = vault_pipeline
    recipients = [fresh_address() for _ in range(100)]
    names = [
        p.gateway.stub.CreateWithdrawal(
            create_request(amount=f"{i + 1}.5", recipient=r), metadata=p.partner.metadata
        ).name
        for i, r in enumerate(recipients)
    ]
    done = [p.wait_for_state(name, S.STATE_COMPLETED, timeout=120) for name in names]
    assert [p.token_balance(r) for r in recipients] == [
        (i + 1) * 1_000_000 + 500_000 for i in range(100)
    ]
    hashes = {w.transaction_hash for w in done}
    assert len(hashes) == 2  # two full batches of 50
    # In normal operation the vault never has to skip a number as already paid.
    assert p.monitor.server.follower.skipped_as_paid == 0  # type: ignore[attr-defined]
    # Each transaction's fee is attributed to its withdrawals to the wei.
    by_tx: dict[str, int] = defaultdict(int)
    for w in rows(p, names).values():
        assert w.tx_hash is not None and w.fee_wei is not None
        by_tx[w.tx_hash] += w.fee_wei
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            for tx_hash, total in by_tx.items():
                payout = session.scalar(
                    select(PayoutTransaction).where(PayoutTransaction.tx_hash == tx_hash)
                )
                assert payout is not None and payout.kind == "vault"
                assert payout.fee_wei == total
    finally:
        engine.dispose()


def test_priority_closes_the_batch_at_once(vault_pipeline: Pipeline) -> None:
    p = vault_pipeline
    waiting = p.gateway.stub.CreateWithdrawal(
        create_request(amount="1", recipient=fresh_address()), metadata=p.partner.metadata
    )
    time.sleep(2.0)
    assert p.get(waiting.name).state == S.STATE_QUEUED  # a lone standard one waits (30 s)
    urgent = p.gateway.stub.CreateWithdrawal(
        create_request(
            amount="2", recipient=fresh_address(), priority=withdrawal_pb2.PRIORITY_PRIORITY
        ),
        metadata=p.partner.metadata,
    )
    a = p.wait_for_state(urgent.name, S.STATE_COMPLETED, timeout=30)
    b = p.wait_for_state(waiting.name, S.STATE_COMPLETED, timeout=30)
    assert a.transaction_hash == b.transaction_hash  # it took the waiting one along


def _settled(p: Pipeline, names: list[str]) -> dict[str, withdrawal_pb2.Withdrawal]:
    deadline = time.monotonic() + 60
    states: dict[str, withdrawal_pb2.Withdrawal] = {}
    while time.monotonic() < deadline:
        states = {n: p.get(n) for n in names}
        if all(w.state in (S.STATE_COMPLETED, S.STATE_ON_HOLD) for w in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"not settled: {states}")


def test_failing_item_is_isolated_then_retried_under_its_number(
    vault_pipeline: Pipeline,
) -> None:
    p = vault_pipeline
    vault = p.boot.payout_vault
    assert vault is not None
    owner = p.anvil.accounts[0]
    token = p.boot.token_address
    recipients = [fresh_address() for _ in range(3)]
    # Signed and broadcast while the vault has no cap; then, in the block that mines them,
    # the owner caps it at 10 USDC per hour (a higher tip, so first): of three 4 USDC
    # payments the third fails inside the payout, while the others are paid.
    set_interval_mining(p.w3, 0)
    set_automine(p.w3, False)
    try:
        names = [
            p.gateway.stub.CreateWithdrawal(
                create_request(amount="4", recipient=r, priority=withdrawal_pb2.PRIORITY_PRIORITY),
                metadata=p.partner.metadata,
            ).name
            for r in recipients
        ]
        for name in names:
            p.wait_for_state(name, S.STATE_BROADCAST, timeout=30)
        payout_vault_contract(p.w3, vault).functions.setOutflowCap(
            token, 10_000_000, 3600
        ).transact(
            {
                "from": owner.address,
                "maxPriorityFeePerGas": Web3.to_wei(500, "gwei"),
                "maxFeePerGas": Web3.to_wei(2000, "gwei"),
            }
        )
        mine(p.w3, 7)
    finally:
        set_automine(p.w3, True)
        set_interval_mining(p.w3, 1)
    try:
        states = _settled(p, names)
        held = [n for n, w in states.items() if w.state == S.STATE_ON_HOLD]
        assert len(held) == 1, states
        assert states[held[0]].state_reason == "OUTFLOW_CAP_REACHED"
        held_row = rows(p, held)[held[0].split("/")[1]]
        number = held_row.payout_number
        assert number is not None and not is_paid(p.w3, vault, number)
        assert p.token_balance(held_row.recipient) == 0
        time.sleep(2)  # the processor plans within the cap: no new attempt while it lasts
        assert p.get(held[0]).state == S.STATE_ON_HOLD
    finally:
        set_outflow_cap(p.w3, vault, owner.private_key, token, BaseUnits(0), 3600)
    # With the cap lifted it is paid by itself, once, under the same number, at a new nonce.
    p.wait_for_state(held[0], S.STATE_COMPLETED, timeout=60)
    assert [p.token_balance(r) for r in recipients] == [4_000_000] * 3
    assert is_paid(p.w3, vault, number)
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            attempts = session.execute(
                select(PayoutItem.payout_number, PayoutItem.outcome, PayoutTransaction.nonce)
                .join(PayoutTransaction, PayoutTransaction.id == PayoutItem.payout_tx_id)
                .where(PayoutItem.withdrawal_id == held_row.id)
                .order_by(PayoutTransaction.nonce)
            ).all()
    finally:
        engine.dispose()
    assert [a.outcome for a in attempts] == ["FAILED", "PAID"]
    assert {a.payout_number for a in attempts} == {number}
    assert attempts[0].nonce != attempts[1].nonce
