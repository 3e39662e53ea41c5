"""The admin API on a real gateway (gRPC and REST, MariaDB and SQLite): operator credentials
only, a role per method (one table, checked against the descriptors), four eyes on changes,
operator credentials, and the hash-chained admin audit trail."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import delete, select, update
from sqlalchemy.orm import make_transient

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.admin.core import AdminCore
from svc_gateway.admin.dispatch import AdminDispatcher
from svc_gateway.admin.kinds import change_kinds
from svc_gateway.admin.roles import METHOD_ROLES
from svc_gateway.admin.servicer import SERVICE as ADMIN_SERVICE
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import rich_error
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit, AdminChange, Operator
from withdrawal_shared.db.operators import Role

ADMIN_METHODS = [method.name for method in ADMIN_SERVICE.methods]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def alice(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("alice"), Role.ADMIN)


@pytest.fixture(scope="module")
def bob(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("bob"), Role.ADMIN)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("viewer"), Role.VIEWER)


@pytest.fixture(scope="module")
def nobody(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("nobody"))


_holders: dict[tuple[int, Role], OperatorAccount] = {}


def roles_holder(gateway: RunningGateway, role: Role) -> OperatorAccount:
    """An operator holding `role` (one per gateway and role)."""
    key = (id(gateway), role)
    if key not in _holders:
        _holders[key] = gateway.add_operator(_id(role.value), role)
    return _holders[key]


def call(gateway: RunningGateway, method: str, request: Any, who: OperatorAccount) -> Any:
    return getattr(gateway.admin, method)(request, metadata=who.metadata)


def refused(
    gateway: RunningGateway, method: str, request: Any, metadata: Any
) -> tuple[grpc.StatusCode, Any, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(gateway.admin, method)(request, metadata=metadata)
    return rich_error(caught.value)


def propose(
    gateway: RunningGateway,
    who: OperatorAccount,
    kind: str,
    payload: dict[str, Any],
    request_id: str = "",
) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    request = admin_pb2.CreateChangeRequest(
        change=admin_pb2.Change(kind=kind, payload=body), request_id=request_id
    )
    change: admin_pb2.Change = call(gateway, "CreateChange", request, who)
    return change


def last_audit(gateway: RunningGateway) -> AdminAudit:
    with gateway.server.store.sessions() as session:
        row = session.scalars(select(AdminAudit).order_by(AdminAudit.seq.desc()).limit(1)).one()
        session.expunge(row)
        return row


def chain_verifies(gateway: RunningGateway) -> bool:
    with gateway.server.store.sessions() as session:
        return verify_admin_audit_chain(session)


# ---------------------------------------------------------------- the role table


def test_every_admin_method_has_exactly_one_role_row() -> None:
    assert set(METHOD_ROLES) == set(ADMIN_METHODS)


def test_the_dispatcher_refuses_to_start_without_a_role_row(gateway: RunningGateway) -> None:
    core = AdminCore(gateway.server.store.sessions, None, change_kinds(), 60)  # type: ignore[arg-type]
    missing = {name: role for name, role in METHOD_ROLES.items() if name != "ConfirmChange"}
    with pytest.raises(TypeError, match="ConfirmChange has no row"):
        AdminDispatcher(ADMIN_SERVICE, core, None, missing)  # type: ignore[arg-type]
    extra = {**METHOD_ROLES, "DropEverything": Role.ADMIN}
    with pytest.raises(TypeError, match="DropEverything"):
        AdminDispatcher(ADMIN_SERVICE, core, None, extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_each_method_requires_its_role_and_a_denial_is_audited(
    gateway: RunningGateway,
    method: str,
    nobody: OperatorAccount,
    viewer: OperatorAccount,
    alice: OperatorAccount,
) -> None:
    required = METHOD_ROLES[method]
    lacking = nobody if required is Role.VIEWER else viewer
    request = ADMIN_SERVICE.methods_by_name[method].input_type._concrete_class()
    code, info, _ = refused(gateway, method, request, lacking.metadata)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.reason == "ROLE_REQUIRED"
    assert info.metadata["role"] == required.value
    audit = last_audit(gateway)
    assert (audit.operator_id, audit.action, audit.outcome, audit.reason) == (
        lacking.id,
        method,
        "DENIED",
        "ROLE_REQUIRED",
    )
    # With the role the same (empty) request gets past the check: whatever it answers, it is
    # not a missing role.
    holder = alice if required in (Role.VIEWER, Role.ADMIN) else roles_holder(gateway, required)
    try:
        call(gateway, method, request, holder)
    except grpc.RpcError as exc:
        assert rich_error(exc)[1].reason != "ROLE_REQUIRED"
    assert chain_verifies(gateway)


# ---------------------------------------------------------------- credentials by service


def test_partner_keys_are_refused_by_the_admin_api(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    code, info, _ = refused(
        gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), partner_a.metadata
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and info.reason == "UNAUTHENTICATED"
    response = httpx.get(f"{gateway.base_url}/v1/admin/operators", headers=partner_a.headers)
    assert response.status_code == 401
    assert "operator credential" in response.json()["error"]["message"]
    assert "partner API key" in response.json()["error"]["message"]


def test_operator_credentials_are_refused_by_the_withdrawal_api(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(), metadata=alice.metadata
        )
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED and info.reason == "UNAUTHENTICATED"
    assert "partner API key" in (caught.value.details() or "")  # type: ignore[attr-defined]
    response = httpx.get(f"{gateway.base_url}/v1/withdrawals", headers=alice.headers)
    assert response.status_code == 401
    assert "operator credential" in response.json()["error"]["message"]


def test_missing_and_unknown_operator_credentials(gateway: RunningGateway) -> None:
    code, _, _ = refused(gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), ())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    forged = (("authorization", "Bearer awo_0badc0de_" + "0" * 64),)
    code, _, _ = refused(gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), forged)
    assert code == grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------- four eyes


def test_four_eyes_create_operator(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    carol = _id("carol")
    change = propose(
        gateway, alice, "operator.create", {"operator": carol, "roles": ["viewer"]}, "c-1"
    )
    assert change.state == admin_pb2.Change.STATE_PROPOSED
    assert change.target == f"operators/{carol}" and change.proposer == f"operators/{alice.id}"
    again = propose(
        gateway, alice, "operator.create", {"operator": carol, "roles": ["viewer"]}, "c-1"
    )
    assert again.name == change.name
    with pytest.raises(grpc.RpcError) as caught:
        propose(gateway, alice, "operator.create", {"operator": carol, "roles": ["admin"]}, "c-1")
    assert rich_error(caught.value)[1].reason == "IDEMPOTENCY_KEY_REUSED"
    # Not applied yet.
    code, info, _ = refused(
        gateway,
        "GetOperator",
        admin_pb2.GetOperatorRequest(name=f"operators/{carol}"),
        alice.metadata,
    )
    assert code == grpc.StatusCode.NOT_FOUND

    code, info, _ = refused(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), alice.metadata
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and info.reason == "SELF_CONFIRMATION"
    audit = last_audit(gateway)
    assert (audit.action, audit.outcome, audit.reason, audit.target) == (
        "ConfirmChange",
        "DENIED",
        "SELF_CONFIRMATION",
        change.name,
    )

    applied = call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), bob)
    assert applied.state == admin_pb2.Change.STATE_APPLIED
    assert applied.decider == f"operators/{bob.id}"
    audit = last_audit(gateway)
    assert audit.outcome == "SUCCEEDED" and audit.operator_id == bob.id
    assert '"roles":["viewer"]' in (audit.after_value or "")
    created = call(
        gateway, "GetOperator", admin_pb2.GetOperatorRequest(name=f"operators/{carol}"), bob
    )
    assert list(created.roles) == [admin_pb2.ROLE_VIEWER]
    assert created.state == admin_pb2.Operator.STATE_ACTIVE

    # Confirming twice is idempotent; rejecting an applied change is refused.
    twice = call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), bob)
    assert (
        twice.state == admin_pb2.Change.STATE_APPLIED and twice.decide_time == applied.decide_time
    )
    code, info, _ = refused(
        gateway, "RejectChange", admin_pb2.RejectChangeRequest(name=change.name), bob.metadata
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "CHANGE_NOT_PENDING"
    assert info.metadata["state"] == "APPLIED"
    assert chain_verifies(gateway)


def test_roles_change_and_disable_take_effect_only_when_confirmed(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    dave = gateway.add_operator(_id("dave"), Role.VIEWER)
    listing = admin_pb2.ListOperatorsRequest()
    call(gateway, "ListOperators", listing, dave)
    change = propose(
        gateway, bob, "operator.set_roles", {"operator": dave.id, "roles": ["approver"]}
    )
    call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), alice)
    row = call(
        gateway, "GetOperator", admin_pb2.GetOperatorRequest(name=f"operators/{dave.id}"), dave
    )
    assert list(row.roles) == [admin_pb2.ROLE_APPROVER]

    disable = propose(gateway, alice, "operator.disable", {"operator": dave.id})
    call(gateway, "ListOperators", listing, dave)  # still works: only proposed
    call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=disable.name), bob)
    code, _, _ = refused(gateway, "ListOperators", listing, dave.metadata)
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_rejected_and_expired_changes_never_apply(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    erin = _id("erin")
    change = propose(gateway, alice, "operator.create", {"operator": erin, "roles": ["admin"]})
    rejected = call(
        gateway,
        "RejectChange",
        admin_pb2.RejectChangeRequest(name=change.name, reason="not needed"),
        bob,
    )
    assert rejected.state == admin_pb2.Change.STATE_REJECTED
    assert rejected.reject_reason == "not needed"
    again = call(gateway, "RejectChange", admin_pb2.RejectChangeRequest(name=change.name), bob)
    assert again.state == admin_pb2.Change.STATE_REJECTED
    _, info, _ = refused(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), bob.metadata
    )
    assert info.reason == "CHANGE_NOT_PENDING" and info.metadata["state"] == "REJECTED"

    late = propose(gateway, alice, "operator.create", {"operator": erin, "roles": ["admin"]})
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            update(AdminChange)
            .where(AdminChange.id == late.name.removeprefix("changes/"))
            .values(expire_time=AdminChange.create_time)
        )
    _, info, _ = refused(
        gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=late.name), bob.metadata
    )
    assert info.reason == "CHANGE_NOT_PENDING" and info.metadata["state"] == "EXPIRED"
    fetched = call(gateway, "GetChange", admin_pb2.GetChangeRequest(name=late.name), alice)
    assert fetched.state == admin_pb2.Change.STATE_EXPIRED
    with gateway.server.store.sessions() as session:
        assert session.get(Operator, erin) is None


def test_bad_proposals_are_refused_and_audited(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        propose(gateway, alice, "operator.create", {"operator": "X!", "roles": ["root"]})
    code, _, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["change.payload.operator", "change.payload.roles"]
    assert last_audit(gateway).outcome == "FAILED"
    with pytest.raises(grpc.RpcError) as caught:
        propose(gateway, alice, "tier.unknown", {})
    assert rich_error(caught.value)[2] == ["change.kind"]


def test_list_changes_pages_and_filters(gateway: RunningGateway, alice: OperatorAccount) -> None:
    for _ in range(3):
        propose(gateway, alice, "operator.disable", {"operator": _id("ghost")})
    first = call(
        gateway,
        "ListChanges",
        admin_pb2.ListChangesRequest(page_size=2, filter="state = PROPOSED"),
        alice,
    )
    assert len(first.changes) == 2 and first.next_page_token
    assert all(c.state == admin_pb2.Change.STATE_PROPOSED for c in first.changes)
    second = call(
        gateway,
        "ListChanges",
        admin_pb2.ListChangesRequest(
            page_size=2, filter="state = PROPOSED", page_token=first.next_page_token
        ),
        alice,
    )
    assert second.changes[0].name < first.changes[1].name


# ---------------------------------------------------------------- credentials


def test_credentials_are_shown_once_and_revocable(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    frank = gateway.add_operator(_id("frank"), Role.OPERATOR)
    request = admin_pb2.CreateOperatorCredentialRequest(
        parent=f"operators/{frank.id}",
        credential=admin_pb2.OperatorCredential(description="laptop"),
        request_id="cred-1",
    )
    created = call(gateway, "CreateOperatorCredential", request, alice)
    assert created.secret.startswith(created.prefix + "_") and created.prefix.startswith("awo_")
    repeat = call(gateway, "CreateOperatorCredential", request, alice)
    assert repeat.name == created.name and repeat.secret == ""
    audit = last_audit(gateway)
    assert created.secret not in (audit.after_value or "") + (audit.before_value or "")
    second = OperatorAccount(frank.id, created.secret)
    call(gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), second)
    call(gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), frank)  # one identity

    revoked = call(
        gateway,
        "RevokeOperatorCredential",
        admin_pb2.RevokeOperatorCredentialRequest(name=created.name),
        alice,
    )
    assert revoked.HasField("revoke_time")
    code, _, _ = refused(
        gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), second.metadata
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    call(gateway, "ListOperators", admin_pb2.ListOperatorsRequest(), frank)


# ---------------------------------------------------------------- REST, health, reflection


def test_rest_under_v1_admin(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    grace = _id("grace")
    response = httpx.post(
        f"{gateway.base_url}/v1/admin/changes",
        json={"kind": "operator.create", "payload": {"operator": grace, "roles": ["viewer"]}},
        headers={**alice.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    assert response.json()["state"] == "STATE_PROPOSED"
    denied = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:confirm", json={}, headers=alice.headers
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["details"][0]["reason"] == "SELF_CONFIRMATION"
    confirmed = httpx.post(
        f"{gateway.base_url}/v1/admin/{name}:confirm", json={}, headers=bob.headers
    )
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "STATE_APPLIED"
    got = httpx.get(f"{gateway.base_url}/v1/admin/operators/{grace}", headers=alice.headers)
    assert got.status_code == 200 and got.json()["roles"] == ["ROLE_VIEWER"]
    audit = httpx.get(f"{gateway.base_url}/v1/admin/auditEntries?pageSize=2", headers=alice.headers)
    assert audit.status_code == 200
    newest = audit.json()["adminAuditEntries"][0]
    assert newest["action"] == "ConfirmChange" and newest["outcome"] == "OUTCOME_SUCCEEDED"
    viewer_only = gateway.add_operator(_id("viewer"), Role.VIEWER)
    forbidden = httpx.post(
        f"{gateway.base_url}/v1/admin/changes",
        json={"kind": "operator.disable", "payload": {"operator": grace}},
        headers=viewer_only.headers,
    )
    assert forbidden.status_code == 403
    detail = forbidden.json()["error"]["details"][0]
    assert detail["reason"] == "ROLE_REQUIRED" and detail["metadata"]["role"] == "admin"
    document = httpx.get(f"{gateway.base_url}/openapi.json").json()
    admin_paths = [p for p in document["paths"] if p.startswith("/v1/admin/")]
    assert "/v1/admin/changes/{change}:confirm" in admin_paths
    assert "403" in document["paths"]["/v1/admin/changes/{change}:confirm"]["post"]["responses"]


def test_health_and_reflection_include_the_admin_service(gateway: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=ADMIN_SERVICE.full_name))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    responses = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in responses[0].list_services_response.service}
    assert ADMIN_SERVICE.full_name in names


# ---------------------------------------------------------------- the chain itself


def test_tampering_with_the_admin_audit_trail_is_detected(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    propose(gateway, alice, "operator.disable", {"operator": _id("ghost")})
    assert chain_verifies(gateway)
    row = last_audit(gateway)
    forged = (row.after_value or "").replace("PROPOSED", "APPLIED")
    for value in (forged, row.after_value):  # edit the row, then put it back
        with gateway.server.store.sessions.begin() as session:
            session.execute(
                update(AdminAudit).where(AdminAudit.seq == row.seq).values(after_value=value)
            )
        assert chain_verifies(gateway) is (value == row.after_value)
    with gateway.server.store.sessions.begin() as session:  # remove the newest row
        session.execute(delete(AdminAudit).where(AdminAudit.seq == row.seq))
    assert not chain_verifies(gateway)
    with gateway.server.store.sessions.begin() as session:
        make_transient(row)
        session.add(row)
    assert chain_verifies(gateway)
