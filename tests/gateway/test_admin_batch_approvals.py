"""A CSV batch approved or rejected as one decision on the admin API, on a real gateway
(gRPC and REST, MariaDB and SQLite): each held row gets the caller's approval through the
single approval's own rules (a two-approval row waits for a second operator, one operator
counts once, a row the caller created is left for others), rows in other states are
untouched, and every group of decisions is in the admin audit trail."""

from __future__ import annotations

import secrets
import uuid

import grpc
import httpx
import pytest
from sqlalchemy import select, update

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from tests.support.approvals import hold
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import fresh_address, rich_error
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit, Withdrawal
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def approver_a(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("ann"), Role.APPROVER)


@pytest.fixture(scope="module")
def approver_b(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("ben"), Role.APPROVER)


@pytest.fixture(scope="module")
def partner(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(_id("p"), set(Scope))


def held_batch(
    gateway: RunningGateway, partner: Partner, amounts: list[str]
) -> tuple[str, dict[str, str]]:
    """A batch of one row per amount, screened as the processor screens it: (its name,
    withdrawal id -> state)."""
    content = "recipient_address,amount,token\r\n" + "".join(
        f"{fresh_address()},{amount},USDC\r\n" for amount in amounts
    )
    stub = batch_pb2_grpc.BatchServiceStub(gateway.channel)
    batch = stub.CreateBatch(
        iter(
            [
                batch_pb2.CreateBatchRequest(
                    header=batch_pb2.CreateBatchHeader(request_id=str(uuid.uuid4()))
                ),
                batch_pb2.CreateBatchRequest(chunk=content.encode()),
            ]
        ),
        metadata=partner.metadata,
    )
    return batch.name, hold_rows(gateway, batch.name)


def hold_rows(gateway: RunningGateway, name: str) -> dict[str, str]:
    sessions = gateway.server.store.sessions
    with sessions() as session:
        ids = list(session.scalars(select(Withdrawal.id).where(Withdrawal.batch_id == name[8:])))
    hold(sessions, ids)
    return states(gateway, name)


def states(gateway: RunningGateway, name: str) -> dict[str, str]:
    with gateway.server.store.sessions() as session:
        return dict(
            session.execute(
                select(Withdrawal.id, Withdrawal.state).where(Withdrawal.batch_id == name[8:])
            ).all()
        )


def counts(d: admin_pb2.BatchApprovalDecision) -> tuple[int, int, int, int, int, dict[str, int]]:
    return (d.pending, d.approved, d.recorded, d.rejected, d.unchanged, dict(d.refused))


def test_approving_a_batch_applies_each_row_s_quorum_once_per_operator(
    gateway: RunningGateway,
    partner: Partner,
    approver_a: OperatorAccount,
    approver_b: OperatorAccount,
) -> None:
    # 200,000 USDC needs two approvals under the shipped rules, 20,000 one, 1 none.
    name, before = held_batch(gateway, partner, ["200000", "200000", "20000", "1"])
    assert sorted(before.values()) == ["PENDING_APPROVAL"] * 3 + ["RECEIVED"]
    request = admin_pb2.ApproveBatchRequest(name=name, reason="payroll checked")
    first = gateway.admin.ApproveBatch(request, metadata=approver_a.metadata)
    assert first.batch == name
    assert counts(first) == (3, 1, 2, 0, 0, {})
    again = gateway.admin.ApproveBatch(request, metadata=approver_a.metadata)
    assert counts(again) == (2, 0, 0, 0, 2, {})  # the same operator counts once
    assert sorted(states(gateway, name).values()) == ["PENDING_APPROVAL"] * 2 + [
        "QUEUED",
        "RECEIVED",
    ]
    response = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:approve",
        json={"reason": "second pair of eyes"},
        headers=approver_b.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["batch"], body["pending"], body["approved"], body["recorded"]) == (name, 2, 2, 0)
    after = states(gateway, name)
    assert sorted(after.values()) == ["QUEUED"] * 3 + ["RECEIVED"]
    # Nothing waits any more: a clear refusal, over gRPC and REST.
    with pytest.raises(grpc.RpcError) as caught:
        gateway.admin.ApproveBatch(request, metadata=approver_b.metadata)
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_PENDING_APPROVAL")
    refused = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:reject", json={}, headers=approver_b.headers
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["reason"] == "NOT_PENDING_APPROVAL"
    with gateway.server.store.sessions() as session:
        audited = session.execute(
            select(AdminAudit.operator_id, AdminAudit.action, AdminAudit.outcome)
            .where(AdminAudit.target == name)
            .order_by(AdminAudit.seq)
        ).all()
        assert verify_admin_audit_chain(session)
    assert [tuple(a) for a in audited] == [
        (approver_a.id, "ApproveBatch", "SUCCEEDED"),
        (approver_a.id, "ApproveBatch", "SUCCEEDED"),
        (approver_b.id, "ApproveBatch", "SUCCEEDED"),
        (approver_b.id, "ApproveBatch", "FAILED"),
        (approver_b.id, "RejectBatch", "FAILED"),
    ]


def test_the_creator_s_rows_are_left_for_others_and_a_rejection_rejects_the_rest(
    gateway: RunningGateway,
    partner: Partner,
    approver_a: OperatorAccount,
    approver_b: OperatorAccount,
) -> None:
    name, before = held_batch(gateway, partner, ["20000", "20000", "20000"])
    mine = sorted(before)[0]
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            update(Withdrawal).where(Withdrawal.id == mine).values(created_by=approver_a.id)
        )
    decision = gateway.admin.ApproveBatch(
        admin_pb2.ApproveBatchRequest(name=name), metadata=approver_a.metadata
    )
    assert counts(decision) == (2, 2, 0, 0, 0, {"SELF_APPROVAL": 1})
    assert states(gateway, name)[mine] == "PENDING_APPROVAL"
    rejected = gateway.admin.RejectBatch(
        admin_pb2.RejectBatchRequest(name=name, reason="duplicate payroll"),
        metadata=approver_b.metadata,
    )
    assert counts(rejected) == (1, 0, 0, 1, 0, {})
    assert states(gateway, name)[mine] == "REJECTED"


def test_a_batch_decision_needs_the_approver_role_and_a_batch(
    gateway: RunningGateway, partner: Partner, approver_a: OperatorAccount
) -> None:
    viewer = gateway.add_operator(_id("vic"), Role.VIEWER)
    name, _ = held_batch(gateway, partner, ["20000"])
    with pytest.raises(grpc.RpcError) as caught:
        gateway.admin.ApproveBatch(
            admin_pb2.ApproveBatchRequest(name=name), metadata=viewer.metadata
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    for bad, code in (
        ("batches/01j9zq8m5k3v7t2r4w6y8a0c1e", grpc.StatusCode.NOT_FOUND),
        ("withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            gateway.admin.ApproveBatch(
                admin_pb2.ApproveBatchRequest(name=bad), metadata=approver_a.metadata
            )
        assert caught.value.code() == code  # type: ignore[attr-defined]
    assert set(states(gateway, name).values()) == {"PENDING_APPROVAL"}
