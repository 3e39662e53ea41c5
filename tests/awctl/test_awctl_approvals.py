"""awctl approvals, blocklist, tiers and tier-limit proposals against a real gateway
(MariaDB and SQLite)."""

from __future__ import annotations

import json
import secrets

import pytest
from sqlalchemy import select

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc
from tests.awctl.test_awctl import as_op, ok_json
from tests.support.approvals import held_withdrawal, hold
from tests.support.gateway import OperatorAccount, RunningGateway
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.models import AdminChange, Withdrawal
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def approver(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("appr"), Role.APPROVER)


@pytest.fixture(scope="module")
def second_approver(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("appr2"), Role.APPROVER)


def test_approvals_list_and_approve(
    gateway: RunningGateway, approver: OperatorAccount, second_approver: OperatorAccount
) -> None:
    withdrawal_id = held_withdrawal(gateway.server.store.sessions, _id("partner"))
    table = as_op(gateway, approver, "approvals", "list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if withdrawal_id[:12] in line)
    assert "0/2" in row and "200000 USDC" in row
    listed = ok_json(as_op(gateway, approver, "approvals", "list", "--json"))
    found = {p["withdrawal"]: p for p in listed["pendingApprovals"]}
    assert found[f"withdrawals/{withdrawal_id}"]["approvalsRequired"] == 2

    first = as_op(gateway, approver, "approvals", "approve", withdrawal_id, "--reason", "ok")
    assert first.exit_code == 0, first.output
    assert "PENDING_APPROVAL" in first.stdout and "1 of 2" in first.stdout
    repeat = as_op(gateway, approver, "approvals", "approve", withdrawal_id)
    assert repeat.exit_code == 0 and "already recorded" in repeat.output
    second = ok_json(
        as_op(
            gateway,
            second_approver,
            "approvals",
            "approve",
            f"withdrawals/{withdrawal_id}",
            "--json",
        )
    )
    assert second["state"] == "QUEUED" and second["approvals"] == 2
    with gateway.server.store.sessions() as session:
        row_state = session.scalar(select(Withdrawal.state).where(Withdrawal.id == withdrawal_id))
    assert row_state == "QUEUED"
    late = as_op(gateway, approver, "approvals", "reject", withdrawal_id, "--reason", "late")
    assert late.exit_code == 1 and "NOT_PENDING_APPROVAL" in late.stderr


def test_a_viewer_is_refused_with_a_hint(gateway: RunningGateway) -> None:
    viewer = gateway.add_operator(_id("viewer"), Role.VIEWER)
    withdrawal_id = held_withdrawal(gateway.server.store.sessions, _id("partner"))
    result = as_op(gateway, viewer, "approvals", "approve", withdrawal_id)
    assert result.exit_code == 1
    assert "ROLE_REQUIRED" in result.stderr and "approver" in result.stderr


def test_blocklist_commands(gateway: RunningGateway) -> None:
    ops = gateway.add_operator(_id("ops"), Role.OPERATOR)
    address = "0x" + secrets.token_hex(20)
    added = as_op(gateway, ops, "blocklist", "add", address, "--reason", "OFAC")
    assert added.exit_code == 0, added.output
    listed = ok_json(as_op(gateway, ops, "blocklist", "list", "--json"))
    assert address in {b["address"] for b in listed["blockedAddresses"]}
    removed = as_op(gateway, ops, "blocklist", "remove", address)
    assert removed.exit_code == 0 and "Unblocked" in removed.stdout
    again = as_op(gateway, ops, "blocklist", "remove", address)
    assert again.exit_code == 0 and "was not blocked" in again.stdout


def test_tiers_list_and_propose_tier_limits(gateway: RunningGateway) -> None:
    admin = gateway.add_operator(_id("adm"), Role.ADMIN)
    shown = as_op(gateway, admin, "tiers", "list")
    assert shown.exit_code == 0 and "standard" in shown.stdout and "vip" in shown.stdout
    proposed = ok_json(
        as_op(
            gateway,
            admin,
            "changes",
            "propose-tier-limits",
            "vip",
            "USDC",
            "--per-withdrawal",
            "5000",
            "--daily-count",
            "7",
            "--json",
        )
    )
    assert proposed["kind"] == "tier.set_limits" and proposed["state"] == "STATE_PROPOSED"
    assert proposed["payload"] == {
        "tier": "vip",
        "token": "USDC",
        "chain": "polygon",
        "per_withdrawal_max": "5000",
        "daily_count": 7.0,
    }
    with gateway.server.store.sessions() as session:
        row = session.get(AdminChange, proposed["name"].removeprefix("changes/"))
        assert row is not None and row.state == "PROPOSED"
        tiers = {t.name: t for t in tier_admin.list_tiers(session)}
    assert tiers["vip"].limits == ()  # nothing applied before a second admin confirms
    assert json.loads(row.payload)["tier"] == "vip"


def test_approve_and_reject_a_batch(
    gateway: RunningGateway, approver: OperatorAccount, second_approver: OperatorAccount
) -> None:
    partner = gateway.add_partner(_id("partner"), set(Scope))
    batches = []
    for amounts in (["200000", "20000"], ["20000"]):
        content = "recipient_address,amount,token\r\n" + "".join(
            f"0x{secrets.token_hex(20)},{amount},USDC\r\n" for amount in amounts
        )
        batch = batch_pb2_grpc.BatchServiceStub(gateway.channel).CreateBatch(
            iter(
                [
                    batch_pb2.CreateBatchRequest(
                        header=batch_pb2.CreateBatchHeader(request_id=_id("b"))
                    ),
                    batch_pb2.CreateBatchRequest(chunk=content.encode()),
                ]
            ),
            metadata=partner.metadata,
        )
        with gateway.server.store.sessions() as session:
            ids = list(
                session.scalars(select(Withdrawal.id).where(Withdrawal.batch_id == batch.name[8:]))
            )
        assert len(hold(gateway.server.store.sessions, ids)) == len(amounts)
        batches.append(batch.name)
    table = as_op(gateway, approver, "approvals", "approve-batch", batches[0], "--reason", "ok")
    assert table.exit_code == 0, table.output
    assert "approved (queued)" in table.stdout and "more needed" in table.stdout
    second = ok_json(
        as_op(gateway, second_approver, "approvals", "approve-batch", batches[0][8:], "--json")
    )
    assert (second["pending"], second["approved"]) == (1, 1)
    reject = ("approvals", "reject-batch", batches[1], "--reason", "no")
    rejected = ok_json(as_op(gateway, approver, *reject, "--json"))
    assert (rejected["pending"], rejected["rejected"]) == (1, 1)
    again = as_op(gateway, approver, *reject)
    assert again.exit_code == 1 and "NOT_PENDING_APPROVAL" in again.stderr
