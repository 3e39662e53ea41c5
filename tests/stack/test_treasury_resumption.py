"""The treasury executor resumes from the database at every step (`tests.support.treasury`:
real MariaDB, Redis, anvil, Safe, gateway, processor, monitor and signers; here the processor
does not run the executor, the test drives fresh executors as a restarted processor would).

One operation goes through: its Safe nonce assigned, then a "crash"; with one owner's signer
answering it waits (one signature, the same nonce) pass after pass; with two it is SIGNED, then
a "crash"; a hot wallet's payout row reserved, then a "crash" before signing, which the
processor's sweeper signs and broadcasts like any reserved payout; a fresh executor, and a
second one beside it, settle it. The Safe executed it once: its nonce advanced by one, the
nonce the operation took never changed, one execution transaction was sent.

Then operations the Safe cannot run: one naming a token the chain does not have is FAILED
without taking a nonce; a sweep of more than the vault holds waits SIGNED at its nonce (not
sent) and the operation after it waits too, until the vault holds enough."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.admin.v1 import admin_pb2
from devstack.vault import fund_vault
from svc_processor import treasury as treasury_module
from svc_processor.pipeline import BatchSettings, Pipeline
from svc_processor.signer_client import SignerClient
from svc_processor.treasury import TreasuryExecutor
from tests.support.treasury import CHAIN, TreasuryStack, treasury_stack
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    PayoutTransaction,
    SafeSignature,
    SafeTransaction,
    SafeTreasury,
)
from withdrawal_shared.states import PayoutState

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with treasury_stack(
        redis_url, module_redis_prefix, tmp_path_factory, executor_in_processor=False
    ) as running:
        yield running


def _executor(stack: TreasuryStack, owner_targets: list[str]) -> TreasuryExecutor:
    """A fresh executor, as a restarted processor builds it."""
    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    w3 = stack.pipeline.w3
    pipeline = Pipeline(sessions, w3, SignerClient(stack.hot_target, 10.0), CHAIN, BatchSettings())
    owners = [SignerClient(target, 10.0) for target in owner_targets]
    return TreasuryExecutor(sessions, w3, pipeline, owners, CHAIN)


def _row(stack: TreasuryStack) -> SafeTransaction:
    """The first test's one operation."""
    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    with sessions() as session:
        row = session.scalars(select(SafeTransaction).order_by(SafeTransaction.id).limit(1)).one()
        session.expunge(row)
        return row


def _signatures(stack: TreasuryStack, safe_tx_id: str) -> int:
    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    with sessions() as session:
        return len(
            session.scalars(
                select(SafeSignature).where(SafeSignature.safe_tx_id == safe_tx_id)
            ).all()
        )


def test_every_step_resumes_and_the_safe_executes_once(stack: TreasuryStack) -> None:
    w3 = stack.pipeline.w3
    vault = payout_vault_contract(w3, stack.pipeline.boot.payout_vault)  # type: ignore[arg-type]
    operator = Web3.to_checksum_address(Account.create().address)
    nonce_before = safe_nonce(w3, stack.safe)
    change = stack.propose(
        "treasury.set_vault_operator", {"chain": CHAIN, "operator": operator, "allowed": True}
    )
    stack.confirm(change.name)
    pending = _row(stack)
    assert (pending.state, pending.safe_nonce) == ("PENDING", None)

    # 1. The nonce is assigned, then the process dies.
    assert _executor(stack, [])._assign(pending)
    assigned = _row(stack)
    assert (assigned.state, assigned.safe_nonce) == ("PENDING", nonce_before)
    assert assigned.safe_tx_hash is not None

    # 2. Only one running owner's signer (and the stopped one): it waits, at the same nonce.
    stopped, first_running, _ = stack.owner_targets
    for _ in range(2):
        _executor(stack, [stopped, first_running]).run_once()
        waiting = _row(stack)
        assert (waiting.state, waiting.safe_nonce) == ("PENDING", nonce_before)
        assert waiting.safe_tx_hash == assigned.safe_tx_hash
        assert _signatures(stack, waiting.id) == 1

    # 3. Both running owners: SIGNED, then the process dies before any hot wallet is asked.
    collecting = _executor(stack, stack.owner_targets)
    collecting._execute = lambda op: None  # type: ignore[method-assign]
    collecting.run_once()
    signed = _row(stack)
    assert signed.state == "SIGNED" and signed.exec_calldata
    assert signed.safe_nonce == nonce_before and _signatures(stack, signed.id) == 2

    # 4. A hot wallet's payout row is reserved, then the process dies before signing it.
    reserving = _executor(stack, stack.owner_targets)
    reserving.payouts.sign_reserved = lambda payout_id: []  # type: ignore[method-assign]
    reserving.run_once()
    executing = _row(stack)
    assert executing.state == "EXECUTING" and executing.payout_tx_id is not None

    # 5. The processor's sweeper signs and sends the reserved row; fresh executors settle it.
    settlers = [_executor(stack, stack.owner_targets) for _ in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _row(stack).state != "EXECUTED":
        for settler in settlers:
            settler.run_once()
        time.sleep(0.5)
    done = _row(stack)
    assert done.state == "EXECUTED", done.failure_reason
    assert done.safe_nonce == nonce_before and done.safe_tx_hash == assigned.safe_tx_hash
    assert stack.get(change.name).treasury_operation.state == (
        admin_pb2.TreasuryOperation.STATE_EXECUTED
    )

    assert vault.functions.operators(operator).call() is True
    assert safe_nonce(w3, stack.safe) == nonce_before + 1
    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    with sessions() as session:
        rows = session.scalars(
            select(PayoutTransaction).where(PayoutTransaction.kind == "safe_exec")
        ).all()
        assert [r.state for r in rows] == [PayoutState.CONFIRMED]
        assert rows[0].id == done.payout_tx_id and rows[0].tx_hash == done.tx_hash
        treasury = session.get(SafeTreasury, CHAIN)
        assert treasury is not None and treasury.next_nonce == nonce_before + 1
    # More passes change nothing.
    for settler in settlers:
        settler.run_once()
    assert _row(stack).state == "EXECUTED"
    assert safe_nonce(w3, stack.safe) == nonce_before + 1


def test_an_operation_the_safe_cannot_run_keeps_its_nonce_and_runs_once_it_can(
    stack: TreasuryStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unbuildable operation is FAILED and takes no nonce; a sweep of more than the vault
    holds is SIGNED at its nonce and not sent (eth_estimateGas: it reverts), and the operation
    applied after it waits; once the vault holds enough, the sweep runs, then the next one."""
    w3 = stack.pipeline.w3
    vault_address = stack.pipeline.boot.payout_vault
    assert vault_address is not None
    token = stack.pipeline.boot.token_address
    vault = payout_vault_contract(w3, vault_address)
    held = stack.pipeline.token_balance(vault_address)
    nonce_before = safe_nonce(w3, stack.safe)
    safe_before = stack.pipeline.token_balance(stack.safe)
    operator = Web3.to_checksum_address(Account.create().address)
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

    # The vault gets one more base unit than the sweep takes: the same Safe transaction runs.
    deployer = stack.pipeline.anvil.accounts[0]
    fund_vault(w3, token, deployer.private_key, vault_address, BaseUnits(2), mint_new=True)
    monkeypatch.setattr(treasury_module, "RETRY_SECONDS", 0.0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        stack.get(later).treasury_operation.state != admin_pb2.TreasuryOperation.STATE_EXECUTED
    ):
        executor.run_once()
        time.sleep(0.5)
    swept = stack.get(sweep).treasury_operation
    assert swept.state == admin_pb2.TreasuryOperation.STATE_EXECUTED, swept
    assert swept.safe_nonce == nonce_before
    assert swept.safe_transaction_hash == waiting.safe_transaction_hash
    assert swept.failure_reason == ""
    after = stack.get(later).treasury_operation
    assert after.state == admin_pb2.TreasuryOperation.STATE_EXECUTED, after
    assert after.safe_nonce == nonce_before + 1
    assert safe_nonce(w3, stack.safe) == nonce_before + 2
    assert stack.pipeline.token_balance(stack.safe) == safe_before + held + 1
    assert stack.pipeline.token_balance(vault_address) == 1
    assert vault.functions.operators(operator).call() is True
