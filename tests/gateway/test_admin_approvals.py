"""Approvals, the blocklist and tiers on the admin API, on a real gateway (gRPC and REST,
MariaDB and SQLite): four eyes on a large withdrawal (one operator counts once, whatever its
credential; the creator cannot approve), rejections, the blocklist, and tier limits that
change only when a second admin confirms them; every decision in the admin audit trail."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.admin.v1 import admin_pb2
from tests.support.approvals import USDC, held_withdrawal
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import create_request, rich_error
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit, BlockedAddress, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.operators import Role, issue_credential


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def approver_a(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("ann"), Role.APPROVER)


@pytest.fixture(scope="module")
def approver_b(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("ben"), Role.APPROVER)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("vic"), Role.VIEWER)


@pytest.fixture(scope="module")
def ops(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("oscar"), Role.OPERATOR)


@pytest.fixture(scope="module")
def admin_1(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("adm1"), Role.ADMIN)


@pytest.fixture(scope="module")
def admin_2(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("adm2"), Role.ADMIN)


def call(gateway: RunningGateway, method: str, request: Any, who: OperatorAccount) -> Any:
    return getattr(gateway.admin, method)(request, metadata=who.metadata)


def refused(
    gateway: RunningGateway, method: str, request: Any, who: OperatorAccount
) -> tuple[grpc.StatusCode, Any, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(gateway.admin, method)(request, metadata=who.metadata)
    return rich_error(caught.value)


def audits(gateway: RunningGateway, target: str) -> list[AdminAudit]:
    with gateway.server.store.sessions() as session:
        rows = list(
            session.scalars(
                select(AdminAudit).where(AdminAudit.target == target).order_by(AdminAudit.seq)
            )
        )
        session.expunge_all()
        return rows


def chain_verifies(gateway: RunningGateway) -> bool:
    with gateway.server.store.sessions() as session:
        return verify_admin_audit_chain(session)


def state_of(gateway: RunningGateway, withdrawal_id: str) -> str:
    with gateway.server.store.sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        return row.state


# ---------------------------------------------------------------- approvals


def test_two_approvals_one_operator_counts_once_then_queued(
    gateway: RunningGateway,
    approver_a: OperatorAccount,
    approver_b: OperatorAccount,
    viewer: OperatorAccount,
) -> None:
    withdrawal_id = held_withdrawal(gateway.server.store.sessions, _id("partner"))
    name = f"withdrawals/{withdrawal_id}"

    listed = call(gateway, "ListPendingApprovals", admin_pb2.ListPendingApprovalsRequest(), viewer)
    pending = {p.withdrawal: p for p in listed.pending_approvals}[name]
    assert pending.approvals_required == 2 and list(pending.approvers) == []
    assert pending.amount == "200000" and pending.token == "USDC" and pending.rule == "default"

    first = call(
        gateway,
        "ApproveWithdrawal",
        admin_pb2.ApproveWithdrawalRequest(name=name, reason="KYC checked"),
        approver_a,
    )
    assert (first.state, first.approvals, first.approvals_required, first.counted) == (
        "PENDING_APPROVAL",
        1,
        2,
        True,
    )
    # The same operator through a second credential: one identity, counted once.
    with gateway.server.store.sessions.begin() as session:
        _, second_key = issue_credential(session, approver_a.id, created_by="tests")
    again = call(
        gateway,
        "ApproveWithdrawal",
        admin_pb2.ApproveWithdrawalRequest(name=name),
        OperatorAccount(approver_a.id, second_key),
    )
    assert (again.state, again.approvals, again.counted) == ("PENDING_APPROVAL", 1, False)
    assert state_of(gateway, withdrawal_id) == "PENDING_APPROVAL"
    listed = call(gateway, "ListPendingApprovals", admin_pb2.ListPendingApprovalsRequest(), viewer)
    pending = {p.withdrawal: p for p in listed.pending_approvals}[name]
    assert list(pending.approvers) == [f"operators/{approver_a.id}"]

    # The second approver, over REST.
    response = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:approve",
        json={"reason": "second pair of eyes"},
        headers=approver_b.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "QUEUED" and body["approvals"] == 2 and body["counted"] is True
    assert state_of(gateway, withdrawal_id) == "QUEUED"

    trail = audits(gateway, name)
    assert [(a.operator_id, a.action, a.outcome) for a in trail] == [
        (approver_a.id, "ApproveWithdrawal", "SUCCEEDED"),
        (approver_a.id, "ApproveWithdrawal", "SUCCEEDED"),
        (approver_b.id, "ApproveWithdrawal", "SUCCEEDED"),
    ]
    assert '"state":"QUEUED"' in (trail[2].after_value or "")
    assert trail[1].after_value is None  # the repeat changed nothing
    with gateway.server.store.sessions() as session:
        actors = list(
            session.scalars(
                select(WithdrawalAudit.actor)
                .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
                .order_by(WithdrawalAudit.version)
            )
        )
    assert actors[-2:] == [approver_a.id, approver_b.id]

    # Decided: a further decision is refused and audited.
    code, info, _ = refused(
        gateway, "RejectWithdrawal", admin_pb2.RejectWithdrawalRequest(name=name), approver_b
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "NOT_PENDING_APPROVAL"
    assert info.metadata["state"] == "QUEUED"
    assert audits(gateway, name)[-1].outcome == "FAILED"
    listed = call(gateway, "ListPendingApprovals", admin_pb2.ListPendingApprovalsRequest(), viewer)
    assert name not in {p.withdrawal for p in listed.pending_approvals}
    assert chain_verifies(gateway)


def test_the_creator_cannot_approve_and_a_rejection_ends_it(
    gateway: RunningGateway, approver_a: OperatorAccount, approver_b: OperatorAccount
) -> None:
    withdrawal_id = held_withdrawal(
        gateway.server.store.sessions, _id("partner"), 20_000 * USDC, created_by=approver_a.id
    )
    name = f"withdrawals/{withdrawal_id}"
    code, info, _ = refused(
        gateway, "ApproveWithdrawal", admin_pb2.ApproveWithdrawalRequest(name=name), approver_a
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and info.reason == "SELF_APPROVAL"
    denied = audits(gateway, name)[-1]
    assert (denied.operator_id, denied.outcome, denied.reason) == (
        approver_a.id,
        "DENIED",
        "SELF_APPROVAL",
    )
    response = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:approve", json={}, headers=approver_a.headers
    )
    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["reason"] == "SELF_APPROVAL"

    rejected = call(
        gateway,
        "RejectWithdrawal",
        admin_pb2.RejectWithdrawalRequest(name=name, reason="sanctions hit"),
        approver_b,
    )
    assert rejected.state == "REJECTED"
    assert state_of(gateway, withdrawal_id) == "REJECTED"
    last = audits(gateway, name)[-1]
    assert (last.operator_id, last.action, last.outcome) == (
        approver_b.id,
        "RejectWithdrawal",
        "SUCCEEDED",
    )
    assert "sanctions hit" in (last.after_value or "")


def test_bad_and_unknown_withdrawal_names(
    gateway: RunningGateway, approver_a: OperatorAccount
) -> None:
    code, _, fields = refused(
        gateway,
        "ApproveWithdrawal",
        admin_pb2.ApproveWithdrawalRequest(name="withdrawals/nope"),
        approver_a,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["name"]
    code, _, _ = refused(
        gateway,
        "ApproveWithdrawal",
        admin_pb2.ApproveWithdrawalRequest(name="withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e"),
        approver_a,
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_approvals_need_the_approver_role(
    gateway: RunningGateway, viewer: OperatorAccount, admin_1: OperatorAccount
) -> None:
    withdrawal_id = held_withdrawal(gateway.server.store.sessions, _id("partner"))
    request = admin_pb2.ApproveWithdrawalRequest(name=f"withdrawals/{withdrawal_id}")
    for who in (viewer, admin_1):  # admin does not include approver
        code, info, _ = refused(gateway, "ApproveWithdrawal", request, who)
        assert code == grpc.StatusCode.PERMISSION_DENIED and info.reason == "ROLE_REQUIRED"
        assert info.metadata["role"] == "approver"
    assert state_of(gateway, withdrawal_id) == "PENDING_APPROVAL"


# ---------------------------------------------------------------- blocklist


def test_block_list_and_unblock(
    gateway: RunningGateway,
    ops: OperatorAccount,
    viewer: OperatorAccount,
    approver_a: OperatorAccount,
) -> None:
    lower = "0x" + secrets.token_hex(20)
    address = Web3.to_checksum_address(lower)
    blocked = call(
        gateway,
        "BlockAddress",
        admin_pb2.BlockAddressRequest(address=address, reason="OFAC SDN"),
        ops,
    )
    assert blocked.name == f"blockedAddresses/{lower}" and blocked.creator == f"operators/{ops.id}"
    again = call(
        gateway, "BlockAddress", admin_pb2.BlockAddressRequest(address=lower, reason="other"), ops
    )
    assert again.reason == "OFAC SDN"  # the first entry stays
    listed = call(gateway, "ListBlockedAddresses", admin_pb2.ListBlockedAddressesRequest(), viewer)
    assert lower in {b.address for b in listed.blocked_addresses}
    code, info, _ = refused(
        gateway, "BlockAddress", admin_pb2.BlockAddressRequest(address=lower), approver_a
    )
    assert info.reason == "ROLE_REQUIRED" and info.metadata["role"] == "operator"
    code, _, fields = refused(
        gateway, "BlockAddress", admin_pb2.BlockAddressRequest(address="0x12"), ops
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["address"]

    removed = call(
        gateway,
        "UnblockAddress",
        admin_pb2.UnblockAddressRequest(name=f"blockedAddresses/{lower}"),
        ops,
    )
    assert removed.was_blocked and removed.address == lower
    twice = call(
        gateway,
        "UnblockAddress",
        admin_pb2.UnblockAddressRequest(name=f"blockedAddresses/{lower}"),
        ops,
    )
    assert not twice.was_blocked
    with gateway.server.store.sessions() as session:
        assert session.get(BlockedAddress, lower) is None
    trail = audits(gateway, f"blockedAddresses/{lower}")
    assert [(a.action, a.outcome) for a in trail] == [
        ("BlockAddress", "SUCCEEDED"),
        ("BlockAddress", "SUCCEEDED"),
        ("UnblockAddress", "SUCCEEDED"),
        ("UnblockAddress", "SUCCEEDED"),
    ]
    assert '"blocked":true' in (trail[0].after_value or "")
    assert '"blocked":false' in (trail[2].after_value or "")
    assert trail[1].after_value is None and trail[3].after_value is None


# ---------------------------------------------------------------- tiers and limits


@pytest.fixture
def standard_usdc_unlimited(gateway: RunningGateway) -> Iterator[None]:
    yield
    with gateway.server.store.sessions.begin() as session:
        tier_admin.set_tier_limits(
            session,
            "standard",
            "USDC",
            per_withdrawal_max=None,
            daily_amount=None,
            daily_count=None,
        )
    gateway.server.store.limits.invalidate()


def propose(
    gateway: RunningGateway, who: OperatorAccount, kind: str, payload: dict[str, Any]
) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    request = admin_pb2.CreateChangeRequest(change=admin_pb2.Change(kind=kind, payload=body))
    change: admin_pb2.Change = call(gateway, "CreateChange", request, who)
    return change


def _create(gateway: RunningGateway, partner: Partner, amount: str) -> Any:
    request = create_request(amount=amount)
    request.withdrawal.user_ref = "user-1"
    return gateway.stub.CreateWithdrawal(request, metadata=partner.metadata, timeout=10)


def test_tier_limits_apply_only_when_a_second_admin_confirms(
    gateway: RunningGateway,
    admin_1: OperatorAccount,
    admin_2: OperatorAccount,
    viewer: OperatorAccount,
    standard_usdc_unlimited: None,
) -> None:
    partner = gateway.add_partner(_id("tiers"))
    change = propose(
        gateway,
        admin_1,
        "tier.set_limits",
        {"tier": "standard", "token": "USDC", "per_withdrawal_max": "10", "daily_count": 5},
    )
    assert change.target == "tiers/standard"
    assert change.state == admin_pb2.Change.STATE_PROPOSED
    _create(gateway, partner, "20")  # proposed only: no effect
    code, info, _ = refused(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), admin_1
    )
    assert info.reason == "SELF_CONFIRMATION"
    _create(gateway, partner, "20")

    applied = call(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), admin_2
    )
    assert applied.state == admin_pb2.Change.STATE_APPLIED
    with pytest.raises(grpc.RpcError) as caught:
        _create(gateway, partner, "20")
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "LIMIT_EXCEEDED"
    assert info.metadata["limit"] == "PER_WITHDRAWAL" and info.metadata["limit_value"] == "10"
    _create(gateway, partner, "10")

    audit = audits(gateway, change.name)[-1]
    assert (audit.operator_id, audit.outcome) == (admin_2.id, "SUCCEEDED")
    assert '"per_withdrawal_max":"10"' in (audit.after_value or "")
    assert '"value":null' in (audit.before_value or "")

    tiers = call(gateway, "ListTiers", admin_pb2.ListTiersRequest(), viewer)
    standard = {t.name: t for t in tiers.tiers}["tiers/standard"]
    usdc = {limit.token: limit for limit in standard.limits}["USDC"]
    assert usdc.per_withdrawal_max == "10" and usdc.daily_count == 5
    assert not usdc.HasField("daily_amount")
    assert "tiers/vip" in {t.name for t in tiers.tiers}


def test_partner_and_user_tier_kinds(
    gateway: RunningGateway, admin_1: OperatorAccount, admin_2: OperatorAccount
) -> None:
    partner = gateway.add_partner(_id("kinds"))
    for kind, payload, after in (
        (
            "user.assign_tier",
            {"partner_id": partner.id, "user_ref": "u-1", "tier": "vip"},
            '"tier":"vip"',
        ),
        (
            "partner.set_default_tier",
            {"partner_id": partner.id, "tier": "vip"},
            '"default_tier":"vip"',
        ),
        (
            "partner.set_daily_limit",
            {"partner_id": partner.id, "token": "USDC", "daily_amount": "5000"},
            '"daily_amount":"5000"',
        ),
    ):
        change = propose(gateway, admin_1, kind, payload)
        call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), admin_2)
        assert after in (audits(gateway, change.name)[-1].after_value or ""), kind
    # Removing the partner's limit again.
    change = propose(
        gateway,
        admin_1,
        "partner.set_daily_limit",
        {"partner_id": partner.id, "token": "USDC", "daily_amount": None},
    )
    call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), admin_2)
    audit = audits(gateway, change.name)[-1]
    assert '"daily_amount":null' in (audit.after_value or "")
    assert '"daily_amount":"5000"' in (audit.before_value or "")


def test_bad_tier_changes_are_refused(
    gateway: RunningGateway, admin_1: OperatorAccount, admin_2: OperatorAccount
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        propose(
            gateway,
            admin_1,
            "tier.set_limits",
            {"tier": "standard", "per_withdrawal_max": 10, "daily_count": -1, "colour": "red"},
        )
    code, _, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(fields) == [
        "change.payload.colour",
        "change.payload.daily_count",
        "change.payload.per_withdrawal_max",
        "change.payload.token",
    ]
    unknown = propose(gateway, admin_1, "tier.set_limits", {"tier": "platinum", "token": "USDC"})
    code, info, _ = refused(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=unknown.name), admin_2
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "CHANGE_NOT_APPLICABLE"
    got = call(gateway, "GetChange", admin_pb2.GetChangeRequest(name=unknown.name), admin_2)
    assert got.state == admin_pb2.Change.STATE_PROPOSED
