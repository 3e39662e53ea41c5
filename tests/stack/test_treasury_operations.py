"""Treasury operations end to end, on real components: MariaDB, Redis, anvil with the Safe
v1.4.1 contracts, the gateway, processor and monitor, a hot wallets' signer and three owners'
signers (SIGNER_ROLE=safe_owner, one key each). A 2-of-3 treasury Safe owns the PayoutVault.

An admin proposes `treasury.set_vault_operator`, another confirms it; the processor collects
two owners' signatures (the first owner's signer in its list is stopped: it is skipped, and a
third signature is not needed), a hot wallet sends `execTransaction`, and the vault then has
the new operator, the operation is EXECUTED and the Safe's nonce advanced by exactly one. A
proposal nobody confirmed executes nothing."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from google.protobuf import struct_pb2
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.admin.v1 import admin_pb2
from devstack.safe import create_safe, deploy_safe_contracts
from devstack.vault import transfer_vault_ownership
from svc_signer.settings import ROLE_SAFE_OWNER
from tests.support.databases import mariadb_database
from tests.support.gateway import OperatorAccount
from tests.support.pipeline import Pipeline, running_pipeline, signer_wallets
from tests.support.signers import keystore_signer
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    PayoutTransaction,
    SafeOwner,
    SafeSignature,
    SafeTransaction,
    SafeTreasury,
)
from withdrawal_shared.db.operators import Role
from withdrawal_shared.db.transitions import utcnow

pytestmark = pytest.mark.chain

CHAIN = "polygon"
EXECUTED = admin_pb2.TreasuryOperation.STATE_EXECUTED


@dataclass
class Stack:
    pipeline: Pipeline
    safe: str
    owners: list[str]  # the running owners' signers' keys (the stopped one's is not here)
    stopped_owner: str
    alice: OperatorAccount
    bob: OperatorAccount


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(mariadb_database())
        hot = stack.enter_context(keystore_signer(database, tmp_path_factory.mktemp("hot")))
        stopped = contextlib.ExitStack()
        owner_targets = [
            stopped.enter_context(
                keystore_signer(database, tmp_path_factory.mktemp("owner0"), role=ROLE_SAFE_OWNER)
            )
        ]
        stack.callback(stopped.close)
        for index in (1, 2):
            owner_targets.append(
                stack.enter_context(
                    keystore_signer(
                        database, tmp_path_factory.mktemp(f"owner{index}"), role=ROLE_SAFE_OWNER
                    )
                )
            )
        owners = [signer_wallets(target)[0] for target in owner_targets]
        pipeline = stack.enter_context(
            running_pipeline(
                database,
                redis_url,
                module_redis_prefix,
                hot,
                payout_vault=True,
                safe_owner_signers=owner_targets,
            )
        )
        w3 = pipeline.w3
        deployer = pipeline.anvil.accounts[0]
        deployment = deploy_safe_contracts(w3, deployer.private_key)
        safe = create_safe(w3, deployer.private_key, deployment, owners, 2, salt=20261207)
        vault = pipeline.boot.payout_vault
        assert vault is not None
        transfer_vault_ownership(w3, vault, deployer.private_key, safe)
        sessions = make_sessionmaker(make_engine(database))
        with sessions.begin() as session:
            session.add(
                SafeTreasury(
                    chain=CHAIN,
                    address=safe.lower(),
                    threshold=2,
                    create_time=utcnow(),
                    next_nonce=0,
                )
            )
            session.flush()
            for index, owner in enumerate(owners):
                session.add(
                    SafeOwner(chain=CHAIN, owner_address=owner.lower(), label=f"owner {index}")
                )
        stopped.close()  # the first owner's signer is away from now on
        yield Stack(
            pipeline,
            safe,
            owners[1:],
            owners[0],
            pipeline.gateway.add_operator(f"alice-{secrets.token_hex(3)}", Role.ADMIN),
            pipeline.gateway.add_operator(f"bob-{secrets.token_hex(3)}", Role.ADMIN),
        )


def _propose(stack: Stack, kind: str, payload: dict[str, Any]) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    request = admin_pb2.CreateChangeRequest(change=admin_pb2.Change(kind=kind, payload=body))
    change: admin_pb2.Change = stack.pipeline.gateway.admin.CreateChange(
        request, metadata=stack.alice.metadata
    )
    return change


def _get(stack: Stack, name: str) -> admin_pb2.Change:
    change: admin_pb2.Change = stack.pipeline.gateway.admin.GetChange(
        admin_pb2.GetChangeRequest(name=name), metadata=stack.alice.metadata
    )
    return change


def test_a_confirmed_operation_is_executed_by_the_safe_once(stack: Stack) -> None:
    w3 = stack.pipeline.w3
    vault = payout_vault_contract(w3, stack.pipeline.boot.payout_vault)  # type: ignore[arg-type]
    new_operator = Web3.to_checksum_address(Account.create().address)
    not_confirmed = Web3.to_checksum_address(Account.create().address)
    nonce_before = safe_nonce(w3, stack.safe)

    idle = _propose(
        stack,
        "treasury.set_vault_operator",
        {"chain": CHAIN, "operator": not_confirmed, "allowed": True},
    )
    change = _propose(
        stack,
        "treasury.set_vault_operator",
        {"chain": CHAIN, "operator": new_operator, "allowed": True},
    )
    assert not change.HasField("treasury_operation")  # nothing exists before a confirmation
    applied = stack.pipeline.gateway.admin.ConfirmChange(
        admin_pb2.ConfirmChangeRequest(name=change.name), metadata=stack.bob.metadata
    )
    assert applied.state == admin_pb2.Change.STATE_APPLIED
    assert applied.treasury_operation.name.startswith("treasuryOperations/")
    assert applied.treasury_operation.state == admin_pb2.TreasuryOperation.STATE_PENDING

    deadline = time.monotonic() + 120
    current = _get(stack, change.name)
    while time.monotonic() < deadline and current.treasury_operation.state != EXECUTED:
        assert current.treasury_operation.state != admin_pb2.TreasuryOperation.STATE_FAILED, current
        time.sleep(0.5)
        current = _get(stack, change.name)
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
    assert _get(stack, idle.name).state == admin_pb2.Change.STATE_PROPOSED
    assert not _get(stack, idle.name).HasField("treasury_operation")
    # A later pass executes nothing more.
    time.sleep(2)
    assert safe_nonce(w3, stack.safe) == nonce_before + 1


def test_owner_keys_are_not_hot_wallets(stack: Stack) -> None:
    hot = {w.lower() for w in stack.pipeline.boot.hot_wallets}
    assert hot.isdisjoint({o.lower() for o in [*stack.owners, stack.stopped_owner]})
