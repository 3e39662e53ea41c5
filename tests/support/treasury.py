"""A treasury stack for tests: the pipeline on MariaDB, Redis and anvil (paying through the
PayoutVault), a hot wallets' signer, three owners' signers (SIGNER_ROLE=safe_owner, one key
each), the Safe v1.4.1 contracts, a 2-of-3 treasury Safe of those owners that owns the vault,
its `safe_treasuries` and `safe_owners` rows, and two admins. The Safe is a vault operator
(it pays withdrawals above a token's Safe threshold). The first owner's signer is
stopped once the Safe exists (its target stays first in the processor's list). The chain's
confirmation depth is CONFIRMATIONS."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import struct_pb2
from sqlalchemy import update

from assetwithdrawal.admin.v1 import admin_pb2
from devstack.safe import create_safe, deploy_safe_contracts
from devstack.vault import set_operator, transfer_vault_ownership
from svc_processor.server import ProcessorServer
from svc_signer.settings import ROLE_SAFE_OWNER
from tests.support.databases import mariadb_database
from tests.support.gateway import OperatorAccount
from tests.support.pipeline import Pipeline, running_pipeline, signer_wallets
from tests.support.signers import keystore_signer
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Chain, SafeOwner, SafeTreasury
from withdrawal_shared.db.operators import Role
from withdrawal_shared.db.transitions import utcnow

CHAIN = "polygon"
CONFIRMATIONS = 2
"""The chain's confirmation depth in this stack (the bootstrap's is 5): a payout, a Safe
execution and a rotation's sweep settle after two blocks rather than five. These tests are
about what the Safe, the executor and the rotation do, not about reorganisations."""
TREASURY_POLL_SECONDS = 0.2
"""How often the processor's treasury executor and rotation driver pass (a rotation step takes
a few passes)."""


@dataclass
class TreasuryStack:
    pipeline: Pipeline
    safe: str
    hot_target: str  # the hot wallets' signer
    owner_targets: list[str]  # every owner's signer, the stopped one first
    owners: list[str]  # the running owners' signers' keys (the stopped one's is not here)
    stopped_owner: str
    alice: OperatorAccount
    bob: OperatorAccount

    def propose(self, kind: str, payload: dict[str, Any]) -> admin_pb2.Change:
        body = struct_pb2.Struct()
        body.update(payload)
        request = admin_pb2.CreateChangeRequest(change=admin_pb2.Change(kind=kind, payload=body))
        change: admin_pb2.Change = self.pipeline.gateway.admin.CreateChange(
            request, metadata=self.alice.metadata
        )
        return change

    def confirm(self, name: str) -> admin_pb2.Change:
        change: admin_pb2.Change = self.pipeline.gateway.admin.ConfirmChange(
            admin_pb2.ConfirmChangeRequest(name=name), metadata=self.bob.metadata
        )
        return change

    def get(self, name: str) -> admin_pb2.Change:
        change: admin_pb2.Change = self.pipeline.gateway.admin.GetChange(
            admin_pb2.GetChangeRequest(name=name), metadata=self.alice.metadata
        )
        return change


def safe_events(stack: TreasuryStack, start_block: int, topic: str) -> list[bytes]:
    """The treasury Safe's `topic` events since `start_block` (e.g. `EXECUTION_SUCCESS_TOPIC`):
    the Safe transaction hash of each."""
    w3 = stack.pipeline.w3
    logs = w3.eth.get_logs(
        {
            "address": w3.to_checksum_address(stack.safe),
            "fromBlock": start_block,
            "toBlock": "latest",
            "topics": [HexStr(topic)],
        }
    )
    return [bytes(log["topics"][1]) for log in logs]


@contextlib.contextmanager
def treasury_stack(
    redis_url: str,
    redis_prefix: str,
    directories: Any,
    *,
    executor_in_processor: bool = True,
    hot_owns_keys: bool = False,
) -> Iterator[TreasuryStack]:
    """The stack; with `executor_in_processor` the processor runs the treasury executor
    (PROCESSOR_SAFE_OWNER_SIGNERS set), otherwise the test drives one itself. `directories`
    is pytest's `tmp_path_factory`. With `hot_owns_keys` the hot signer opens its keystore from
    its settings and can create keys (CreateWallet, a rotation)."""
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(mariadb_database())
        hot = stack.enter_context(
            keystore_signer(database, directories.mktemp("hot"), owns_keys=hot_owns_keys)
        )
        stopped = contextlib.ExitStack()
        stack.callback(stopped.close)
        owner_targets = [
            stopped.enter_context(
                keystore_signer(database, directories.mktemp("owner0"), role=ROLE_SAFE_OWNER)
            )
        ]
        for index in (1, 2):
            owner_targets.append(
                stack.enter_context(
                    keystore_signer(
                        database, directories.mktemp(f"owner{index}"), role=ROLE_SAFE_OWNER
                    )
                )
            )
        owners = [signer_wallets(target)[0] for target in owner_targets]
        pipeline = stack.enter_context(
            running_pipeline(
                database,
                redis_url,
                redis_prefix,
                hot,
                payout_vault=True,
                safe_owner_signers=owner_targets if executor_in_processor else (),
                treasury_poll_seconds=TREASURY_POLL_SECONDS,
            )
        )
        w3 = pipeline.w3
        deployer = pipeline.anvil.accounts[0]
        deployment = deploy_safe_contracts(w3, deployer.private_key)
        safe = create_safe(w3, deployer.private_key, deployment, owners, 2, salt=20261207)
        vault = pipeline.boot.payout_vault
        assert vault is not None
        # As the bootstrap does: the Safe pays large withdrawals as a vault operator.
        set_operator(w3, vault, deployer.private_key, safe, True)
        transfer_vault_ownership(w3, vault, deployer.private_key, safe)
        engine = make_engine(database)
        stack.callback(engine.dispose)
        with make_sessionmaker(engine).begin() as session:
            session.execute(
                update(Chain).where(Chain.name == CHAIN).values(confirmations=CONFIRMATIONS)
            )
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
        yield TreasuryStack(
            pipeline,
            safe,
            hot,
            owner_targets,
            owners[1:],
            owners[0],
            pipeline.gateway.add_operator(f"alice-{secrets.token_hex(3)}", Role.ADMIN),
            pipeline.gateway.add_operator(f"bob-{secrets.token_hex(3)}", Role.ADMIN),
        )


@contextlib.contextmanager
def processor_executor_paused(stack: TreasuryStack) -> Iterator[None]:
    """The processor's treasury executor and rotation driver skip their passes, as in a
    processor without PROCESSOR_SAFE_OWNER_SIGNERS (a test then drives executors itself); the
    pass running when this is entered has finished. Its sweeper and batcher go on."""
    server = cast(ProcessorServer, stack.pipeline.processor.server)
    treasury, rotations = server.treasury.run_once, server.rotations.run_once
    server.treasury.run_once = _skip  # type: ignore[method-assign]
    server.rotations.run_once = _skip  # type: ignore[method-assign]
    try:
        # Its passes run on the one "payouts" thread: whatever was queued there before is done
        # once a no-op queued after it has run.
        server._payer.submit(_skip).result(timeout=60)
        yield
    finally:
        server.treasury.run_once = treasury  # type: ignore[method-assign]
        server.rotations.run_once = rotations  # type: ignore[method-assign]


def _skip() -> None:
    return None
