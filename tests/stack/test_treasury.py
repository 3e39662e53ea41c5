"""The treasury Safe end to end, on one real stack for the module (`tests.support.treasury`):
MariaDB, Redis, anvil with the Safe v1.4.1 contracts, the gateway, processor and monitor, a
hot signer that creates its keys itself (keystore), three owners' signers (SIGNER_ROLE=
safe_owner, one key each; the first in the processor's list is stopped once the Safe exists).
A 2-of-3 treasury Safe owns the PayoutVault, and USDC's `safe_threshold_base_units` is 50,000
USDC. Each test leaves the stack as it found it (thresholds, the vault's balance, the
processor's treasury executor running), so none depends on another having run.

Operations: an admin proposes `treasury.set_vault_operator`, another confirms it; the
processor collects two owners' signatures (the stopped owner is skipped, a third is not
needed), a hot wallet sends `execTransaction`; the vault has the new operator, the operation
is EXECUTED and the Safe's nonce advanced by exactly one. A proposal nobody confirmed executes
nothing.

Payouts:
- A 60,000 USDC withdrawal (its approval rule wants one approver) waits PENDING_APPROVAL after
  one approval and is paid after the second: by the Safe, once, judged from the chain (the
  recipient's balance, the vault's bitmap, exactly one ExecutionSuccess, the Safe's nonce up
  by exactly one), two owners' signatures. A 5 USDC withdrawal beside it is paid by a hot
  wallet's vault payout as before.
- A withdrawal approved under the Safe threshold it then exceeds (the threshold lowered after
  its approval) is never paid by a hot wallet: ON_HOLD `SAFE_APPROVALS_MISSING`, no payout
  number, no Safe nonce.
- The other path: a withdrawal routed to the Safe whose token's threshold is raised above it
  before it takes a Safe nonce is paid by a hot wallet's vault payout under the same payout
  number, once; the Safe's nonce is untouched by it.

Resumption (the processor's executor paused, `processor_executor_paused`; the test drives
fresh executors as a restarted processor would): one operation goes through with a "crash"
after its Safe nonce is assigned, after it is SIGNED, and after a hot wallet's payout row is
reserved (the processor's sweeper signs and broadcasts that row); with one owner's signer
answering it waits at the same nonce pass after pass; the Safe executes it once. An operation
naming a token the chain does not have is FAILED without taking a nonce; a sweep of more than
the vault holds waits SIGNED at its nonce (not sent) and the operation after it waits too,
until the vault holds enough.

Rotation: withdrawals are created through the gateway continuously (LOAD_PER_SECOND) from
before the `hot_wallet.rotate` change is confirmed until AFTER_DONE_SECONDS after the
rotation is DONE (MIN_LOAD_SECONDS at least). Then, judged from the chain: every withdrawal
COMPLETED and paid exactly once, the old key retired (the signer refuses a new payout with
it, its operator role is removed on chain, its gas was swept to the Safe and its balance is
~0), and the new wallet paying (withdrawals after the switch were sent by it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from eth_account import Account
from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from web3 import Web3
from web3.contract.contract import ContractFunction

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import rpc
from devstack.vault import fund_vault
from svc_processor import treasury as treasury_module
from svc_processor.pipeline import BatchSettings, Pipeline
from svc_processor.signer_client import SignerClient
from svc_processor.treasury import TreasuryExecutor
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address, rich_error
from tests.support.treasury import (
    CHAIN,
    TreasuryStack,
    processor_executor_paused,
    safe_events,
    treasury_stack,
)
from withdrawal_shared.approvals import core
from withdrawal_shared.chain.contracts import stablecoin_contract
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.chain.payout import decode_payout_events, is_paid, payout_vault_contract
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.chain.safe_tx import EXECUTION_SUCCESS_TOPIC
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    HotWallet,
    PayoutItem,
    PayoutTransaction,
    SafeSignature,
    SafeTransaction,
    SafeTreasury,
    Token,
    Withdrawal,
)
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import PayoutState, State

pytestmark = pytest.mark.chain

S = withdrawal_pb2
EXECUTED = admin_pb2.TreasuryOperation.STATE_EXECUTED
USDC = 10**6
SAFE_THRESHOLD = 50_000 * USDC
Rotation = admin_pb2.HotWalletRotation


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with treasury_stack(
        redis_url, module_redis_prefix, tmp_path_factory, hot_owns_keys=True
    ) as running:
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


def _ids(sessions: sessionmaker[Session], column: InstrumentedAttribute[str]) -> set[str]:
    """Every row's id (`SafeTransaction.id`, ...): what a test made is what is new after it."""
    with sessions() as session:
        return set(session.scalars(select(column)))


def _hot_wallets(sessions: sessionmaker[Session]) -> set[str]:
    """Every hot wallet the chain ever had (a rotation adds one)."""
    with sessions() as session:
        return set(session.scalars(select(HotWallet.address).where(HotWallet.chain == CHAIN)))


# -- operations ------------------------------------------------------------------------------


def test_a_confirmed_operation_is_executed_by_the_safe_once(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    w3 = stack.pipeline.w3
    vault = payout_vault_contract(w3, stack.pipeline.boot.payout_vault)  # type: ignore[arg-type]
    new_operator = Web3.to_checksum_address(Account.create().address)
    not_confirmed = Web3.to_checksum_address(Account.create().address)
    nonce_before = safe_nonce(w3, stack.safe)
    safe_txs_before = _ids(sessions, SafeTransaction.id)
    payouts_before = _ids(sessions, PayoutTransaction.id)

    idle = stack.propose(
        "treasury.set_vault_operator",
        {"chain": CHAIN, "operator": not_confirmed, "allowed": True},
    )
    change = stack.propose(
        "treasury.set_vault_operator",
        {"chain": CHAIN, "operator": new_operator, "allowed": True},
    )
    assert not change.HasField("treasury_operation")  # nothing exists before a confirmation
    applied = stack.confirm(change.name)
    assert applied.state == admin_pb2.Change.STATE_APPLIED
    assert applied.treasury_operation.name.startswith("treasuryOperations/")
    assert applied.treasury_operation.state == admin_pb2.TreasuryOperation.STATE_PENDING

    def executed() -> admin_pb2.Change | None:
        current = stack.get(change.name)
        assert current.treasury_operation.state != admin_pb2.TreasuryOperation.STATE_FAILED, current
        return current if current.treasury_operation.state == EXECUTED else None

    current = wait_until(
        executed, 120, lambda: f"the operation was never EXECUTED: {stack.get(change.name)}"
    )
    operation = current.treasury_operation
    assert operation.state == EXECUTED, current

    assert vault.functions.operators(new_operator).call() is True
    assert vault.functions.operators(not_confirmed).call() is False
    assert safe_nonce(w3, stack.safe) == nonce_before + 1
    assert operation.safe_nonce == nonce_before
    assert operation.safe_transaction_hash.startswith("0x")
    assert len(operation.safe_transaction_hash) == 66
    receipt = w3.eth.get_transaction_receipt(operation.transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert receipt["to"].lower() == stack.safe.lower()

    with sessions() as session:
        rows = session.scalars(
            select(SafeTransaction).where(SafeTransaction.id.not_in(safe_txs_before))
        ).all()
        assert [r.change_id for r in rows] == [change.name.removeprefix("changes/")]
        signers = set(
            session.scalars(
                select(SafeSignature.owner_address).where(SafeSignature.safe_tx_id == rows[0].id)
            )
        )
        assert signers == {owner.lower() for owner in stack.owners}  # two, not the stopped one
        executions = session.scalars(
            select(PayoutTransaction).where(
                PayoutTransaction.kind == "safe_exec",
                PayoutTransaction.id.not_in(payouts_before),
            )
        ).all()
        assert len(executions) == 1
        assert executions[0].tx_hash == operation.transaction_hash
        treasury = session.get(SafeTreasury, CHAIN)
        assert treasury is not None and treasury.next_nonce == nonce_before + 1

    # The proposal nobody confirmed is still only a proposal, with no operation.
    assert stack.get(idle.name).state == admin_pb2.Change.STATE_PROPOSED
    assert not stack.get(idle.name).HasField("treasury_operation")
    # A later pass executes nothing more.
    time.sleep(2)
    assert safe_nonce(w3, stack.safe) == nonce_before + 1


def test_owner_keys_are_not_hot_wallets(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    hot = {w.lower() for w in stack.pipeline.boot.hot_wallets} | _hot_wallets(sessions)
    assert hot.isdisjoint({o.lower() for o in [*stack.owners, stack.stopped_owner]})


# -- payouts ---------------------------------------------------------------------------------


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
    assert len(safe_events(stack, start_block, EXECUTION_SUCCESS_TOPIC)) == 1
    receipt = w3.eth.get_transaction_receipt(done.transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert receipt["to"].lower() == stack.safe.lower()
    assert receipt["from"].lower() in _hot_wallets(sessions)
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
    assert len(safe_events(stack, start_block, EXECUTION_SUCCESS_TOPIC)) == 1


# -- resumption ------------------------------------------------------------------------------


@pytest.fixture
def paused(stack: TreasuryStack) -> Iterator[None]:
    with processor_executor_paused(stack):
        yield


def _executor(stack: TreasuryStack, owner_targets: list[str]) -> TreasuryExecutor:
    """A fresh executor, as a restarted processor builds it."""
    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    w3 = stack.pipeline.w3
    pipeline = Pipeline(sessions, w3, SignerClient(stack.hot_target, 10.0), CHAIN, BatchSettings())
    owners = [SignerClient(target, 10.0) for target in owner_targets]
    return TreasuryExecutor(sessions, w3, pipeline, owners, CHAIN)


def _row(sessions: sessionmaker[Session], change: admin_pb2.Change) -> SafeTransaction:
    """The operation of an applied change."""
    with sessions() as session:
        row = session.scalars(
            select(SafeTransaction).where(
                SafeTransaction.change_id == change.name.removeprefix("changes/")
            )
        ).one()
        session.expunge(row)
        return row


def _signatures(sessions: sessionmaker[Session], safe_tx_id: str) -> int:
    with sessions() as session:
        return len(
            session.scalars(
                select(SafeSignature).where(SafeSignature.safe_tx_id == safe_tx_id)
            ).all()
        )


@pytest.mark.usefixtures("paused")
def test_every_step_resumes_and_the_safe_executes_once(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    w3 = stack.pipeline.w3
    vault = payout_vault_contract(w3, stack.pipeline.boot.payout_vault)  # type: ignore[arg-type]
    operator = Web3.to_checksum_address(Account.create().address)
    nonce_before = safe_nonce(w3, stack.safe)
    payouts_before = _ids(sessions, PayoutTransaction.id)
    change = stack.propose(
        "treasury.set_vault_operator", {"chain": CHAIN, "operator": operator, "allowed": True}
    )
    stack.confirm(change.name)
    pending = _row(sessions, change)
    assert (pending.state, pending.safe_nonce) == ("PENDING", None)

    # 1. The nonce is assigned, then the process dies.
    assert _executor(stack, [])._assign(pending)
    assigned = _row(sessions, change)
    assert (assigned.state, assigned.safe_nonce) == ("PENDING", nonce_before)
    assert assigned.safe_tx_hash is not None

    # 2. Only one running owner's signer (and the stopped one): it waits, at the same nonce.
    stopped, first_running, _ = stack.owner_targets
    for _ in range(2):
        _executor(stack, [stopped, first_running]).run_once()
        waiting = _row(sessions, change)
        assert (waiting.state, waiting.safe_nonce) == ("PENDING", nonce_before)
        assert waiting.safe_tx_hash == assigned.safe_tx_hash
        assert _signatures(sessions, waiting.id) == 1

    # 3. Both running owners: SIGNED, then the process dies before any hot wallet is asked.
    collecting = _executor(stack, stack.owner_targets)
    collecting._execute = lambda op: None  # type: ignore[method-assign]
    collecting.run_once()
    signed = _row(sessions, change)
    assert signed.state == "SIGNED" and signed.exec_calldata
    assert signed.safe_nonce == nonce_before and _signatures(sessions, signed.id) == 2

    # 4. A hot wallet's payout row is reserved, then the process dies before signing it.
    reserving = _executor(stack, stack.owner_targets)
    reserving.payouts.sign_reserved = lambda payout_id: []  # type: ignore[method-assign]
    reserving.run_once()
    executing = _row(sessions, change)
    assert executing.state == "EXECUTING" and executing.payout_tx_id is not None

    # 5. The processor's sweeper signs and sends the reserved row; fresh executors settle it.
    settlers = [_executor(stack, stack.owner_targets) for _ in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _row(sessions, change).state != "EXECUTED":
        for settler in settlers:
            settler.run_once()
        time.sleep(0.2)
    done = _row(sessions, change)
    assert done.state == "EXECUTED", done.failure_reason
    assert done.safe_nonce == nonce_before and done.safe_tx_hash == assigned.safe_tx_hash
    assert stack.get(change.name).treasury_operation.state == EXECUTED

    assert vault.functions.operators(operator).call() is True
    assert safe_nonce(w3, stack.safe) == nonce_before + 1
    with sessions() as session:
        rows = session.scalars(
            select(PayoutTransaction).where(
                PayoutTransaction.kind == "safe_exec",
                PayoutTransaction.id.not_in(payouts_before),
            )
        ).all()
        assert [r.state for r in rows] == [PayoutState.CONFIRMED]
        assert rows[0].id == done.payout_tx_id and rows[0].tx_hash == done.tx_hash
        treasury = session.get(SafeTreasury, CHAIN)
        assert treasury is not None and treasury.next_nonce == nonce_before + 1
    # More passes change nothing.
    for settler in settlers:
        settler.run_once()
    assert _row(sessions, change).state == "EXECUTED"
    assert safe_nonce(w3, stack.safe) == nonce_before + 1


@pytest.mark.usefixtures("paused")
def test_an_operation_the_safe_cannot_run_keeps_its_nonce_and_runs_once_it_can(
    stack: TreasuryStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unbuildable operation is FAILED and takes no nonce; a sweep of more than the vault
    holds is SIGNED at its nonce and not sent (eth_estimateGas: it reverts), and the operation
    applied after it waits; once the vault holds enough, the sweep runs, then the next one.
    The vault gets back what the sweep took."""
    w3 = stack.pipeline.w3
    vault_address = stack.pipeline.boot.payout_vault
    assert vault_address is not None
    token = stack.pipeline.boot.token_address
    vault = payout_vault_contract(w3, vault_address)
    held = stack.pipeline.token_balance(vault_address)
    nonce_before = safe_nonce(w3, stack.safe)
    safe_before = stack.pipeline.token_balance(stack.safe)
    operator = Web3.to_checksum_address(Account.create().address)
    deployer = stack.pipeline.anvil.accounts[0]
    changes = []
    for kind, payload in (
        ("treasury.fund_vault", {"chain": CHAIN, "token": "DAI", "amount_base_units": "1"}),
        ("treasury.sweep", {"chain": CHAIN, "token": "USDC", "amount_base_units": str(held + 1)}),
        ("treasury.set_vault_operator", {"chain": CHAIN, "operator": operator, "allowed": True}),
    ):
        change = stack.propose(kind, payload)
        stack.confirm(change.name)
        changes.append(change.name)
    unbuildable, sweep, later = changes

    try:
        executor = _executor(stack, stack.owner_targets)
        for _ in range(4):
            executor.run_once()
        failed = stack.get(unbuildable).treasury_operation
        assert failed.state == admin_pb2.TreasuryOperation.STATE_FAILED
        assert not failed.HasField("safe_nonce")
        assert "DAI is not configured" in failed.failure_reason
        waiting = stack.get(sweep).treasury_operation
        assert waiting.state == admin_pb2.TreasuryOperation.STATE_SIGNED
        assert waiting.safe_nonce == nonce_before
        assert waiting.failure_reason.startswith("last attempt: execTransaction would revert")
        behind = stack.get(later).treasury_operation
        assert behind.state == admin_pb2.TreasuryOperation.STATE_PENDING
        assert not behind.HasField("safe_nonce")
        assert safe_nonce(w3, stack.safe) == nonce_before

        # The vault gets one more base unit than the sweep takes: the same Safe transaction
        # runs.
        fund_vault(w3, token, deployer.private_key, vault_address, BaseUnits(2), mint_new=True)
        monkeypatch.setattr(treasury_module, "RETRY_SECONDS", 0.0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            stack.get(later).treasury_operation.state != EXECUTED
        ):
            executor.run_once()
            time.sleep(0.2)
        swept = stack.get(sweep).treasury_operation
        assert swept.state == EXECUTED, swept
        assert swept.safe_nonce == nonce_before
        assert swept.safe_transaction_hash == waiting.safe_transaction_hash
        assert swept.failure_reason == ""
        after = stack.get(later).treasury_operation
        assert after.state == EXECUTED, after
        assert after.safe_nonce == nonce_before + 1
        assert safe_nonce(w3, stack.safe) == nonce_before + 2
        assert stack.pipeline.token_balance(stack.safe) == safe_before + held + 1
        assert stack.pipeline.token_balance(vault_address) == 1
        assert vault.functions.operators(operator).call() is True
    finally:
        # The vault pays the other tests' withdrawals: give it back what it held.
        refill = held - stack.pipeline.token_balance(vault_address)
        if refill > 0:
            fund_vault(
                w3, token, deployer.private_key, vault_address, BaseUnits(refill), mint_new=True
            )


# -- rotation --------------------------------------------------------------------------------

LOAD_PER_SECOND = 20
MIN_LOAD_SECONDS = 12  # at least LOAD_PER_SECOND * 10 withdrawals
AFTER_DONE_SECONDS = 4  # withdrawals created after the rotation, all paid by the new key
AMOUNT = "0.01"  # USDC
AMOUNT_BASE_UNITS = 10_000
GAS_WEI = 10**18


def _batched(w3: Web3, calls: Sequence[ContractFunction]) -> list[Any]:
    """The calls' results, read in JSON-RPC batches (hundreds of reads, a few round trips)."""
    results: list[Any] = []
    for start in range(0, len(calls), 200):
        with w3.batch_requests() as batch:
            for call in calls[start : start + 200]:
                batch.add(call)
            results.extend(batch.execute())
    return results


@dataclass
class Load:
    """Creates withdrawals through the gateway at a steady rate until stopped."""

    stack: TreasuryStack
    created: list[tuple[str, str, float]] = field(default_factory=list)  # name, recipient, t
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pipeline = self.stack.pipeline
        start = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            recipient = fresh_address()
            try:
                made = pipeline.gateway.stub.CreateWithdrawal(
                    create_request(amount=AMOUNT, recipient=recipient),
                    metadata=pipeline.partner.metadata,
                    timeout=10,
                )
                self.created.append((made.name, recipient, time.time()))
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")
            sent += 1
            pause = start + sent / LOAD_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def stop(self) -> None:
        self._stop.set()


def test_a_hot_wallet_key_is_rotated_under_load(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    pipeline = stack.pipeline
    w3 = pipeline.w3
    # The Safe pays the new wallet's gas from its own native balance.
    rpc(w3, "anvil_setBalance", [stack.safe, hex(100 * 10**18)])
    with sessions() as session:
        (old,) = session.scalars(
            select(HotWallet.address).where(HotWallet.chain == CHAIN, HotWallet.state == "ACTIVE")
        ).all()
    vault_address = pipeline.boot.payout_vault
    assert vault_address is not None
    vault = payout_vault_contract(w3, vault_address)
    load = Load(stack)
    loader = threading.Thread(target=load.run, daemon=True)
    loader.start()
    try:
        time.sleep(3)
        proposed = stack.propose(
            "hot_wallet.rotate", {"chain": CHAIN, "wallet": old, "gas_wei": str(GAS_WEI)}
        )
        assert not proposed.HasField("hot_wallet_rotation")  # nothing before a confirmation
        applied = stack.confirm(proposed.name)
        assert applied.hot_wallet_rotation.state == Rotation.STATE_RUNNING
        assert applied.hot_wallet_rotation.name.startswith("rotations/")
        switched_at: float | None = None

        def done() -> admin_pb2.Change | None:
            nonlocal switched_at
            current = stack.get(proposed.name)
            rotation = current.hot_wallet_rotation
            assert rotation.state != Rotation.STATE_FAILED, rotation
            if switched_at is None and rotation.step >= Rotation.STEP_DRAIN:
                switched_at = time.time()
            return current if rotation.state == Rotation.STATE_DONE else None

        finished = wait_until(
            done, 150, lambda: f"the rotation did not finish: {stack.get(proposed.name)}"
        )
        # More withdrawals, all for the new wallet, for AFTER_DONE_SECONDS (and the load runs
        # for MIN_LOAD_SECONDS at least).
        time.sleep(max(AFTER_DONE_SECONDS, MIN_LOAD_SECONDS - (time.time() - load.created[0][2])))
    finally:
        load.stop()
        loader.join(15)
    rotation = finished.hot_wallet_rotation
    started = load.created[0][2] if load.created else 0.0
    assert load.errors == [], load.errors[:5]
    assert switched_at is not None
    new = rotation.new_wallet_address.lower()
    assert new and new != old and rotation.old_wallet_address == old
    assert [op.step for op in rotation.operations] == [
        Rotation.STEP_ENABLE_OPERATOR,
        Rotation.STEP_FUND_GAS,
        Rotation.STEP_REMOVE_OPERATOR,
    ]
    for each in rotation.operations:
        assert each.operation.state == admin_pb2.TreasuryOperation.STATE_EXECUTED, each
        assert each.operation.transaction_hash.startswith("0x")

    # Every withdrawal paid exactly once, judged from the chain.
    names = [name for name, _, _ in load.created]
    assert len(names) >= LOAD_PER_SECOND * 10, len(names)
    for name in names:
        pipeline.wait_for_state(name, withdrawal_pb2.STATE_COMPLETED, timeout=90)
    token = stablecoin_contract(w3, pipeline.boot.token_address)
    balances = _batched(
        w3,
        [
            token.functions.balanceOf(Web3.to_checksum_address(recipient))
            for _, recipient, _ in load.created
        ],
    )
    for (_, recipient, _), balance in zip(load.created, balances, strict=True):
        assert balance == AMOUNT_BASE_UNITS, recipient
    with sessions() as session:
        ids = [name.rsplit("/", 1)[1] for name in names]
        rows = session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))).all()
        numbers = [row.payout_number for row in rows]
        assert len(rows) == len(ids) and None not in numbers
        assert len(set(numbers)) == len(numbers)
        senders: dict[str, str | None] = {row.id: None for row in rows}
        senders.update(
            session.execute(
                select(Withdrawal.id, PayoutTransaction.wallet)
                .join(PayoutTransaction, PayoutTransaction.id == Withdrawal.payout_tx_id)
                .where(Withdrawal.id.in_(ids))
            ).all()
        )
        wallets = {w.address: w for w in session.scalars(select(HotWallet))}
    paid = _batched(w3, [vault.functions.isPaid(number) for number in numbers])
    for number, is_paid_now in zip(numbers, paid, strict=True):
        assert is_paid_now is True, number
    assert set(senders.values()) == {old, new}  # both paid: before and after the switch
    by_wallet = {w: sum(1 for s in senders.values() if s == w) for w in (old, new)}
    print(  # the run's numbers, for the record (`pytest -s`)
        f"rotation under load: {len(names)} withdrawals over "
        f"{load.created[-1][2] - started:.0f} s, {by_wallet[old]} paid by the old wallet, "
        f"{by_wallet[new]} by the new one; sweep {rotation.sweep_value_wei} wei"
    )

    # The new wallet pays: withdrawals created after the switch were sent by it (on chain).
    late = [name for name, _, t in load.created if t > switched_at + 2]
    assert late, "no withdrawal was created after the switch"
    for name in late:
        sent = pipeline.get(name).transaction_hash
        receipt = w3.eth.get_transaction_receipt(sent)  # type: ignore[arg-type]
        assert receipt["from"].lower() == new, name
    assert (wallets[new].state, wallets[new].enabled) == ("ACTIVE", True)
    assert (wallets[old].state, wallets[old].enabled) == ("RETIRED", False)

    # The old key is retired: no operator role, its gas swept to the Safe, no new payout.
    assert vault.functions.operators(Web3.to_checksum_address(old)).call() is False
    assert vault.functions.operators(Web3.to_checksum_address(new)).call() is True
    sweep = w3.eth.get_transaction(rotation.sweep_transaction_hash)  # type: ignore[arg-type]
    assert sweep["to"].lower() == stack.safe.lower() and sweep["from"].lower() == old
    assert sweep["value"] == int(rotation.sweep_value_wei) > 0
    assert w3.eth.get_balance(Web3.to_checksum_address(old)) < 10**15  # ~0: dust of the fee
    channel = grpc.insecure_channel(stack.hot_target)
    try:
        signer = signer_pb2_grpc.SignerServiceStub(channel)
        listed = {
            w.address.lower(): w.state
            for w in signer.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10).wallets
        }
        assert listed == {old: signer_pb2.Wallet.STATE_RETIRED, new: signer_pb2.Wallet.STATE_ACTIVE}
        somebody = fresh_address()
        with pytest.raises(grpc.RpcError) as refused:
            signer.SignTransaction(
                signer_pb2.SignTransactionRequest(
                    wallet_address=Web3.to_checksum_address(old),
                    chain_id=137,
                    nonce=w3.eth.get_transaction_count(Web3.to_checksum_address(old)),
                    to_address=pipeline.boot.token_address,
                    data=encode_transfer(somebody, 1),
                    value_wei="0",
                    gas_limit=90_000,
                    max_fee_per_gas_wei="90000000000",
                    max_priority_fee_per_gas_wei="30000000000",
                    purpose=signer_pb2.PURPOSE_PAYOUT,
                    items=[
                        signer_pb2.PayoutItem(
                            withdrawal_id=new_ulid(),
                            recipient_address=somebody,
                            amount_base_units="1",
                            token_address=pipeline.boot.token_address,
                        )
                    ],
                ),
                timeout=10,
            )
        _, info, _ = rich_error(refused.value)
        assert info.reason == "WALLET_RETIRED"
    finally:
        channel.close()
