"""Treasury operations end to end, on real components (`tests.support.treasury`): MariaDB,
Redis, anvil with the Safe v1.4.1 contracts, the gateway, processor and monitor, a hot
wallets' signer and three owners' signers (SIGNER_ROLE=safe_owner, one key each). A 2-of-3
treasury Safe owns the PayoutVault.

An admin proposes `treasury.set_vault_operator`, another confirms it; the processor collects
two owners' signatures (the first owner's signer in its list is stopped: it is skipped, and a
third signature is not needed), a hot wallet sends `execTransaction`, and the vault then has
the new operator, the operation is EXECUTED and the Safe's nonce advanced by exactly one. A
proposal nobody confirmed executes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.admin.v1 import admin_pb2
from tests.support.treasury import CHAIN, TreasuryStack, treasury_stack
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    PayoutTransaction,
    SafeSignature,
    SafeTransaction,
    SafeTreasury,
)

pytestmark = pytest.mark.chain

EXECUTED = admin_pb2.TreasuryOperation.STATE_EXECUTED


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with treasury_stack(redis_url, module_redis_prefix, tmp_path_factory) as running:
        yield running


def test_a_confirmed_operation_is_executed_by_the_safe_once(stack: TreasuryStack) -> None:
    w3 = stack.pipeline.w3
    vault = payout_vault_contract(w3, stack.pipeline.boot.payout_vault)  # type: ignore[arg-type]
    new_operator = Web3.to_checksum_address(Account.create().address)
    not_confirmed = Web3.to_checksum_address(Account.create().address)
    nonce_before = safe_nonce(w3, stack.safe)

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

    deadline = time.monotonic() + 120
    current = stack.get(change.name)
    while time.monotonic() < deadline and current.treasury_operation.state != EXECUTED:
        assert current.treasury_operation.state != admin_pb2.TreasuryOperation.STATE_FAILED, current
        time.sleep(0.5)
        current = stack.get(change.name)
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

    sessions = make_sessionmaker(make_engine(stack.pipeline.database_url))
    with sessions() as session:
        rows = session.scalars(select(SafeTransaction)).all()
        assert [r.change_id for r in rows] == [change.name.removeprefix("changes/")]
        signers = set(
            session.scalars(
                select(SafeSignature.owner_address).where(SafeSignature.safe_tx_id == rows[0].id)
            )
        )
        assert signers == {owner.lower() for owner in stack.owners}  # two, not the stopped one
        executions = session.scalars(
            select(PayoutTransaction).where(PayoutTransaction.kind == "safe_exec")
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


def test_owner_keys_are_not_hot_wallets(stack: TreasuryStack) -> None:
    hot = {w.lower() for w in stack.pipeline.boot.hot_wallets}
    assert hot.isdisjoint({o.lower() for o in [*stack.owners, stack.stopped_owner]})
