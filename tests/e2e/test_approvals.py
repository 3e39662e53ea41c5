"""Approvals and the blocklist on the real pipeline (anvil, MariaDB, Redis, keystore signer,
one ERC-20 transfer per withdrawal), judged from the chain: four eyes above the two-approval
threshold, expiry, a blocked recipient at validation and after it, and the signer refusing an
unapproved withdrawal when called directly."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc, withdrawal_pb2
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.signers import keystore_signer
from withdrawal_shared.approvals import blocklist, core
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import ApprovalRequest, SignerLedgerItem, Withdrawal
from withdrawal_shared.db.operators import Role
from withdrawal_shared.db.transitions import move, utcnow
from withdrawal_shared.scopes import Scope
from withdrawal_shared.states import State

S = withdrawal_pb2
EXPIRY = 600.0  # the stack's PROCESSOR_APPROVAL_EXPIRY_SECONDS; the expiry test backdates


@pytest.fixture(scope="module")
def approvals_stack(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Pipeline, str]]:
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            e2e_database,
            redis_url,
            module_redis_prefix,
            target,
            approval_expiry_seconds=EXPIRY,
        ) as pipeline,
    ):
        yield pipeline, target


@pytest.fixture(scope="module")
def sessions(e2e_database: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = make_engine(e2e_database, pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


def _create(p: Pipeline, amount: str, recipient: str) -> tuple[str, str]:
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount=amount, recipient=recipient), metadata=p.partner.metadata
    )
    return created.name, created.name.split("/", 1)[1]


def test_four_eyes_release_and_pay_once(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    p, _ = approvals_stack
    recipient = fresh_address()
    name, withdrawal_id = _create(p, "150000", recipient)  # above the 2-approval threshold
    held = p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    assert held.state_reason == "APPROVAL_REQUIRED"
    listed = {a.withdrawal_id: a for a in core.list_pending(sessions, limit=1000)}
    assert (listed[withdrawal_id].rule_name, listed[withdrawal_id].approvals_required) == (
        "default",
        2,
    )
    assert core.approve(sessions, withdrawal_id, "alice", "invoice 42").state == (
        State.PENDING_APPROVAL
    )
    again = core.approve(sessions, withdrawal_id, "alice", "again")
    assert (again.counted, again.approvals) == (False, 1)
    time.sleep(2)  # the sweeper (0.5 s) and the batcher had their chance: nothing moves
    assert p.get(name).state == S.STATE_PENDING_APPROVAL
    assert p.token_balance(recipient) == 0
    assert core.approve(sessions, withdrawal_id, "bob").state == State.QUEUED
    done = p.wait_for_state(name, S.STATE_COMPLETED, timeout=60)
    assert p.token_balance(recipient) == 150_000 * 10**6  # paid exactly once, on chain
    with sessions() as session:
        signed = session.scalar(
            select(func.count())
            .select_from(SignerLedgerItem)
            .where(SignerLedgerItem.withdrawal_id == withdrawal_id)
        )
    assert signed == 1
    assert done.transaction_hash


def test_undecided_withdrawal_expires(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    p, _ = approvals_stack
    recipient = fresh_address()
    name, withdrawal_id = _create(p, "20000", recipient)  # one approval needed
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    with sessions.begin() as session:
        session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.withdrawal_id == withdrawal_id)
            .values(create_time=utcnow() - dt.timedelta(seconds=EXPIRY + 60))
        )
    expired = p.wait_for_state(name, S.STATE_REJECTED, timeout=20)
    assert expired.state_reason == "APPROVAL_EXPIRED"
    assert p.token_balance(recipient) == 0


def test_blocked_recipient_rejected_at_validation(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    p, _ = approvals_stack
    recipient = fresh_address()
    blocklist.block_address(sessions, recipient, "compliance", "sanctions list")
    name, _ = _create(p, "5", recipient)
    rejected = p.wait_for_state(name, S.STATE_REJECTED, timeout=20)
    assert rejected.state_reason == "ADDRESS_BLOCKED"
    assert "blocklist" in rejected.state_message
    assert p.token_balance(recipient) == 0


def test_blocked_after_validation_is_never_paid(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    p, _ = approvals_stack
    recipient = fresh_address()
    name, withdrawal_id = _create(p, "20000", recipient)
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    blocklist.block_address(sessions, recipient, "compliance", "listed today")
    assert core.approve(sessions, withdrawal_id, "alice").state == State.QUEUED
    rejected = p.wait_for_state(name, S.STATE_REJECTED, timeout=30)
    assert rejected.state_reason == "ADDRESS_BLOCKED"
    time.sleep(1)
    assert p.token_balance(recipient) == 0


def test_signer_refuses_an_unapproved_withdrawal(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    """A processor that skipped the approvals (forced to QUEUED here) still cannot get it
    signed: the signer reads the approval decisions itself."""
    p, target = approvals_stack
    recipient = fresh_address()
    name, withdrawal_id = _create(p, "150000", recipient)
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    core.approve(sessions, withdrawal_id, "alice")  # one of the two needed
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        move(session, row, State.QUEUED, actor="rogue", reason="QUEUED")
    amount = 150_000 * 10**6
    request = signer_pb2.SignTransactionRequest(
        wallet_address=p.hot_wallet,
        chain_id=137,
        nonce=10_000,
        to_address=p.boot.token_address,
        data=encode_transfer(recipient, amount),
        value_wei="0",
        gas_limit=100_000,
        max_fee_per_gas_wei="90000000000",
        max_priority_fee_per_gas_wei="40000000000",
        purpose=signer_pb2.PURPOSE_PAYOUT,
        items=[
            signer_pb2.PayoutItem(
                withdrawal_id=withdrawal_id,
                recipient_address=recipient,
                amount_base_units=str(amount),
                token_address=p.boot.token_address,
            )
        ],
    )
    with grpc.insecure_channel(target) as channel:
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SignTransaction(request, timeout=10)
    err = refused.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(
        dict(err.trailing_metadata())["grpc-status-details-bin"]  # type: ignore[attr-defined]
    )
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "NOT_APPROVED"
    assert info.metadata["problem"] == "approvals"
    assert (info.metadata["required"], info.metadata["approved"]) == ("2", "1")
    # The processor's own attempt (the forced row is QUEUED) is refused the same way.
    held = p.wait_for_state(name, S.STATE_ON_HOLD, timeout=30)
    assert held.state_reason == "SIGNER_REFUSED"
    time.sleep(1)
    assert p.token_balance(recipient) == 0


def test_a_batch_approved_as_a_whole_is_paid_once_per_row_after_each_quorum(
    approvals_stack: tuple[Pipeline, str], sessions: sessionmaker[Session]
) -> None:
    """The processor holds a batch's large rows; one ApproveBatch queues those one approval
    releases, the two-approval row waits for a second operator's, and every row is paid
    exactly once (judged from the chain and the signer's ledger)."""
    p, _ = approvals_stack
    partner = p.gateway.add_partner(f"batch-approvals-{uuid.uuid4().hex[:6]}", set(Scope))
    ann = p.gateway.add_operator(f"ann-{uuid.uuid4().hex[:6]}", Role.APPROVER)
    ben = p.gateway.add_operator(f"ben-{uuid.uuid4().hex[:6]}", Role.APPROVER)
    amounts = {fresh_address(): a for a in ("150000", "20000", "20000", "5")}
    content = "recipient_address,amount,token\r\n" + "".join(
        f"{r},{a},USDC\r\n" for r, a in amounts.items()
    )
    batch = batch_pb2_grpc.BatchServiceStub(p.gateway.channel).CreateBatch(
        iter(
            [
                batch_pb2.CreateBatchRequest(
                    header=batch_pb2.CreateBatchHeader(request_id=uuid.uuid4().hex)
                ),
                batch_pb2.CreateBatchRequest(chunk=content.encode()),
            ]
        ),
        metadata=partner.metadata,
    )
    batch_id = batch.name.split("/", 1)[1]

    def rows() -> dict[str, tuple[str, str]]:  # recipient -> (id, state)
        with sessions() as session:
            return {
                r: (i, s)
                for i, r, s in session.execute(
                    select(Withdrawal.id, Withdrawal.recipient, Withdrawal.state).where(
                        Withdrawal.batch_id == batch_id
                    )
                )
            }

    def held() -> dict[str, tuple[str, str]] | None:
        now = rows()
        waiting = sum(1 for _, s in now.values() if s == "PENDING_APPROVAL")
        return now if waiting == 3 else None

    wait_until(held, 30, lambda: f"the processor never held 3 rows: {rows()}")
    first = p.gateway.admin.ApproveBatch(
        admin_pb2.ApproveBatchRequest(name=batch.name, reason="payroll"),
        metadata=ann.metadata,
    )
    assert (first.pending, first.approved, first.recorded) == (3, 2, 1)
    large = next(r for r, a in amounts.items() if a == "150000")

    def paid_but_large() -> dict[str, tuple[str, str]] | None:
        now = rows()
        done = [r for r, (_, s) in now.items() if s == "COMPLETED"]
        return now if len(done) == 3 else None

    now = wait_until(paid_but_large, 90, lambda: f"the released rows were not paid: {rows()}")
    assert now[large][1] == "PENDING_APPROVAL" and p.token_balance(large) == 0
    second = p.gateway.admin.ApproveBatch(
        admin_pb2.ApproveBatchRequest(name=batch.name), metadata=ben.metadata
    )
    assert (second.pending, second.approved) == (1, 1)
    wait_until(
        lambda: all(s == "COMPLETED" for _, s in rows().values()) or None,
        90,
        lambda: f"not every row was paid: {rows()}",
    )
    for recipient, amount in amounts.items():
        assert p.token_balance(recipient) == int(amount) * 10**6  # once each, on chain
    with sessions() as session:
        signed = session.execute(
            select(SignerLedgerItem.withdrawal_id, func.count())
            .where(SignerLedgerItem.withdrawal_id.in_([i for i, _ in rows().values()]))
            .group_by(SignerLedgerItem.withdrawal_id)
        ).all()
    assert sorted(n for _, n in signed) == [1, 1, 1, 1]
