"""Large withdrawals paid by the treasury Safe, end to end on real components
(`tests.support.treasury`): MariaDB, Redis, anvil with the Safe v1.4.1 contracts, the gateway,
processor and monitor, a hot wallets' signer and three owners' signers (SIGNER_ROLE=safe_owner,
keystores, one key each; the first in the processor's list is stopped). A 2-of-3 treasury
Safe owns the PayoutVault, and USDC's `safe_threshold_base_units` is 50,000 USDC.

- A 60,000 USDC withdrawal (its approval rule wants one approver) waits PENDING_APPROVAL after
  one approval and is paid after the second: by the Safe, once, judged from the chain (the
  recipient's balance, the vault's bitmap, exactly one ExecutionSuccess, the Safe's nonce up
  by exactly one), two owners' signatures (a third is not needed). A 5 USDC withdrawal beside
  it is paid by a hot wallet's vault payout as before.
- A withdrawal approved under the Safe threshold it then exceeds (the threshold lowered after
  its approval) is never paid by a hot wallet: ON_HOLD `SAFE_APPROVALS_MISSING`, no payout
  number, no Safe nonce.
- The other path: a withdrawal routed to the Safe whose token's threshold is raised above it
  before it takes a Safe nonce is paid by a hot wallet's vault payout under the same payout
  number, once; the Safe's nonce is untouched by it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.vault import fund_vault
from svc_processor import treasury as treasury_module
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.treasury import CHAIN, TreasuryStack, treasury_stack
from withdrawal_shared.approvals import core
from withdrawal_shared.chain.payout import decode_payout_events, is_paid
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.chain.safe_tx import EXECUTION_SUCCESS_TOPIC
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    PayoutItem,
    PayoutTransaction,
    SafeSignature,
    SafeTransaction,
    Token,
    Withdrawal,
)
from withdrawal_shared.states import State

pytestmark = pytest.mark.chain

S = withdrawal_pb2
USDC = 10**6
SAFE_THRESHOLD = 50_000 * USDC


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with treasury_stack(redis_url, module_redis_prefix, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def sessions(stack: TreasuryStack) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(stack.pipeline.database_url, pool_size=2)
    made = make_sessionmaker(engine)
    _set_safe_threshold(made, SAFE_THRESHOLD)
    yield made
    engine.dispose()


def _set_safe_threshold(sessions: sessionmaker[Session], units: int) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Token).where(Token.chain == CHAIN).values(safe_threshold_base_units=units)
        )


def _create(stack: TreasuryStack, amount: str, recipient: str) -> tuple[str, str]:
    p = stack.pipeline
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount=amount, recipient=recipient), metadata=p.partner.metadata
    )
    return created.name, created.name.split("/", 1)[1]


def test_a_large_withdrawal_is_paid_by_the_safe_after_two_approvals(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    p = stack.pipeline
    w3 = p.w3
    vault = p.boot.payout_vault
    assert vault is not None
    start_block = w3.eth.block_number
    nonce_before = safe_nonce(w3, stack.safe)
    large_to, small_to = fresh_address(), fresh_address()

    large, large_id = _create(stack, "60000", large_to)
    small, small_id = _create(stack, "5", small_to)

    held = p.wait_for_state(large, S.STATE_PENDING_APPROVAL, timeout=20)
    assert held.state_reason == "APPROVAL_REQUIRED"
    pending = {a.withdrawal_id: a for a in core.list_pending(sessions, limit=1000)}
    # Its rule (USDC below 100,000) wants one approver; the Safe's threshold two.
    assert pending[large_id].approvals_required == 2
    assert "treasury Safe" in pending[large_id].rule_name

    # The small one is paid by a hot wallet meanwhile, as before.
    small_done = p.wait_for_state(small, S.STATE_COMPLETED, timeout=60)
    assert p.token_balance(small_to) == 5 * USDC

    assert core.approve(sessions, large_id, "alice").state == State.PENDING_APPROVAL
    time.sleep(2)  # the processor had its chances: one approval is not enough
    assert p.get(large).state == S.STATE_PENDING_APPROVAL
    assert p.token_balance(large_to) == 0
    assert safe_nonce(w3, stack.safe) == nonce_before

    assert core.approve(sessions, large_id, "bob").state == State.QUEUED
    done = p.wait_for_state(large, S.STATE_COMPLETED, timeout=120)

    # From the chain: paid once, by the Safe, which advanced by exactly one nonce.
    assert p.token_balance(large_to) == 60_000 * USDC
    assert safe_nonce(w3, stack.safe) == nonce_before + 1
    successes = w3.eth.get_logs(
        {
            "address": w3.to_checksum_address(stack.safe),
            "fromBlock": start_block,
            "toBlock": "latest",
            "topics": [EXECUTION_SUCCESS_TOPIC],
        }
    )
    assert len(successes) == 1
    receipt = w3.eth.get_transaction_receipt(done.transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert receipt["to"].lower() == stack.safe.lower()
    assert receipt["from"].lower() in {w.lower() for w in p.boot.hot_wallets}
    small_receipt = w3.eth.get_transaction_receipt(small_done.transaction_hash)  # type: ignore[arg-type]
    assert small_receipt["to"].lower() == vault.lower()  # the hot wallet's own vault payout

    def executed() -> bool | None:
        # The executor settles its row from the receipt once the monitor confirmed the
        # execution: shortly after the withdrawal's own COMPLETED.
        with sessions() as session:
            states = session.scalars(
                select(SafeTransaction.state).where(SafeTransaction.withdrawal_id == large_id)
            ).all()
        return True if list(states) == ["EXECUTED"] else None

    wait_until(executed, 30, lambda: "the Safe payout row was never settled EXECUTED")
    with sessions() as session:
        row = session.get(Withdrawal, large_id)
        assert row is not None and row.payout_number is not None
        assert is_paid(w3, vault, row.payout_number)
        items = session.scalars(
            select(PayoutItem).where(PayoutItem.withdrawal_id == large_id)
        ).all()
        assert {i.payout_number for i in items} == {row.payout_number}  # one number, ever
        assert {i.outcome for i in items if i.payout_tx_id == row.payout_tx_id} == {"PAID"}
        # The vault's events are in the Safe execution's receipt (the monitor reads them there).
        events = decode_payout_events(receipt["logs"], vault)
        assert [(e.first_number, e.count, e.paid) for e in events.executed] == [
            (row.payout_number, 1, 1)
        ]
        assert not events.skipped and not events.failed
        payouts = session.scalars(
            select(PayoutTransaction).where(
                PayoutTransaction.id.in_([i.payout_tx_id for i in items])
            )
        ).all()
        assert {t.kind for t in payouts} == {"safe_exec"}
        assert done.transaction_hash in {t.tx_hash for t in payouts}
        safe_txs = session.scalars(
            select(SafeTransaction).where(SafeTransaction.withdrawal_id == large_id)
        ).all()
        assert [(t.purpose, t.state, t.safe_nonce) for t in safe_txs] == [
            ("PAYOUT", "EXECUTED", nonce_before)
        ]
        signers = set(
            session.scalars(
                select(SafeSignature.owner_address).where(
                    SafeSignature.safe_tx_id == safe_txs[0].id
                )
            )
        )
        assert signers == {o.lower() for o in stack.owners}  # two; the stopped one not needed
        small_row = session.get(Withdrawal, small_id)
        assert small_row is not None
        assert (
            session.scalar(
                select(SafeTransaction.id).where(SafeTransaction.withdrawal_id == small_id)
            )
            is None
        )

    time.sleep(2)  # later passes execute nothing more
    assert safe_nonce(w3, stack.safe) == nonce_before + 1
    assert p.token_balance(large_to) == 60_000 * USDC


def test_approved_below_a_lowered_threshold_is_never_paid_by_a_hot_wallet(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    p = stack.pipeline
    nonce_before = safe_nonce(p.w3, stack.safe)
    recipient = fresh_address()
    name, withdrawal_id = _create(stack, "20000", recipient)  # one approver; below 50,000
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    assert {a.withdrawal_id: a for a in core.list_pending(sessions)}[
        withdrawal_id
    ].approvals_required == 1
    _set_safe_threshold(sessions, 10_000 * USDC)  # now it is above the Safe threshold
    try:
        assert core.approve(sessions, withdrawal_id, "alice").state == State.QUEUED
        held = p.wait_for_state(name, S.STATE_ON_HOLD, timeout=30)
        assert held.state_reason == "SAFE_APPROVALS_MISSING"
        time.sleep(1.5)
        assert p.get(name).state == S.STATE_ON_HOLD
        assert p.token_balance(recipient) == 0
        assert safe_nonce(p.w3, stack.safe) == nonce_before
        with sessions() as session:
            row = session.get(Withdrawal, withdrawal_id)
            assert row is not None
            assert (row.payout_number, row.payout_tx_id) == (None, None)
            assert (
                session.scalar(
                    select(SafeTransaction.id).where(SafeTransaction.withdrawal_id == withdrawal_id)
                )
                is None
            )
    finally:
        _set_safe_threshold(sessions, SAFE_THRESHOLD)


def test_a_routed_withdrawal_below_a_raised_threshold_is_paid_once_by_a_hot_wallet(
    stack: TreasuryStack, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other path: a large withdrawal routed to the Safe waits behind a sweep the vault
    cannot pay yet (it holds the Safe's nonce); the token's Safe threshold is then raised
    above its amount. Its Safe payout is FAILED before taking a nonce, and a hot wallet's
    vault payout pays it under the payout number it already had, once."""
    p = stack.pipeline
    w3 = p.w3
    vault = p.boot.payout_vault
    assert vault is not None
    start_block = w3.eth.block_number
    nonce_before = safe_nonce(w3, stack.safe)
    held = p.token_balance(vault)
    sweep = stack.propose(
        "treasury.sweep", {"chain": CHAIN, "token": "USDC", "amount_base_units": str(held + 1)}
    )
    stack.confirm(sweep.name)
    signed = admin_pb2.TreasuryOperation.STATE_SIGNED
    wait_until(
        lambda: stack.get(sweep.name).treasury_operation.state == signed or None,
        30,
        lambda: f"the sweep never waited SIGNED: {stack.get(sweep.name)}",
    )

    recipient = fresh_address()
    name, withdrawal_id = _create(stack, "60000", recipient)
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    core.approve(sessions, withdrawal_id, "alice")
    assert core.approve(sessions, withdrawal_id, "bob").state == State.QUEUED

    def routed() -> SafeTransaction | None:
        with sessions() as session:
            return session.scalar(
                select(SafeTransaction).where(SafeTransaction.withdrawal_id == withdrawal_id)
            )

    waiting = wait_until(routed, 30, lambda: "the withdrawal was never routed to the Safe")
    assert (waiting.state, waiting.safe_nonce) == ("PENDING", None)  # behind the sweep
    with sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None and row.payout_number is not None
        number = row.payout_number

    _set_safe_threshold(sessions, 100_000 * USDC)  # now a hot wallet pays 60,000
    try:
        monkeypatch.setattr(treasury_module, "RETRY_SECONDS", 0.0)
        deployer = p.anvil.accounts[0]
        fund_vault(
            w3,
            p.boot.token_address,
            deployer.private_key,
            vault,
            BaseUnits(held + 1),
            mint_new=True,
        )
        done = p.wait_for_state(name, S.STATE_COMPLETED, timeout=120)
    finally:
        _set_safe_threshold(sessions, SAFE_THRESHOLD)

    assert p.token_balance(recipient) == 60_000 * USDC
    assert is_paid(w3, vault, number)
    receipt = w3.eth.get_transaction_receipt(done.transaction_hash)  # type: ignore[arg-type]
    assert receipt["to"].lower() == vault.lower()  # a hot wallet's own vault payout
    with sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None and row.payout_number == number  # never a second number
        items = session.scalars(
            select(PayoutItem).where(PayoutItem.withdrawal_id == withdrawal_id)
        ).all()
        assert [i.payout_number for i in items] == [number]
        failed = session.get(SafeTransaction, waiting.id)
        assert failed is not None
        assert (failed.state, failed.safe_nonce) == ("FAILED", None)
        assert "no longer above its token's Safe threshold" in failed.failure_reason
    assert stack.get(sweep.name).treasury_operation.state == (
        admin_pb2.TreasuryOperation.STATE_EXECUTED
    )
    assert safe_nonce(w3, stack.safe) == nonce_before + 1  # the sweep alone
    successes = w3.eth.get_logs(
        {
            "address": w3.to_checksum_address(stack.safe),
            "fromBlock": start_block,
            "toBlock": "latest",
            "topics": [EXECUTION_SUCCESS_TOPIC],
        }
    )
    assert len(successes) == 1
