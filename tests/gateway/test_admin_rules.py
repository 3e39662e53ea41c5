"""Approval rules on the admin API (a real gateway, MariaDB and SQLite): ListApprovalRules,
and the change kinds `rule.upsert` and `rule.delete`, which change nothing the processor
loads until a second admin confirms; checked payloads, positions kept unique, audited with
before and after."""

from __future__ import annotations

import json
import secrets
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2
from sqlalchemy import select

from assetwithdrawal.admin.v1 import admin_pb2
from tests.support.gateway import OperatorAccount, RunningGateway
from tests.support.requests import rich_error
from withdrawal_shared.approvals import rule_admin
from withdrawal_shared.approvals.rules import Action, Rule, load_rules
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit
from withdrawal_shared.db.operators import Role
from withdrawal_shared.errors import ApiError


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


def call(gateway: RunningGateway, method: str, request: Any, who: OperatorAccount) -> Any:
    return getattr(gateway.admin, method)(request, metadata=who.metadata)


def propose(
    gateway: RunningGateway, who: OperatorAccount, kind: str, payload: dict[str, Any]
) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    request = admin_pb2.CreateChangeRequest(change=admin_pb2.Change(kind=kind, payload=body))
    change: admin_pb2.Change = call(gateway, "CreateChange", request, who)
    return change


def confirm(gateway: RunningGateway, who: OperatorAccount, change: admin_pb2.Change) -> Any:
    return call(gateway, "ConfirmChange", admin_pb2.ConfirmChangeRequest(name=change.name), who)


def loaded(gateway: RunningGateway) -> dict[str, Rule]:
    with gateway.server.store.sessions() as session:
        return {r.name: r for r in load_rules(session).rules}


def last_audit(gateway: RunningGateway) -> AdminAudit:
    with gateway.server.store.sessions() as session:
        row = session.scalars(select(AdminAudit).order_by(AdminAudit.seq.desc()).limit(1)).one()
        session.expunge(row)
        return row


def test_the_seeded_rules_are_listed_by_position_in_pages(
    gateway: RunningGateway, viewer: OperatorAccount
) -> None:
    first = call(
        gateway, "ListApprovalRules", admin_pb2.ListApprovalRulesRequest(page_size=2), viewer
    )
    assert [r.name for r in first.approval_rules][:1] == ["approvalRules/usdc-auto-below-10k"]
    auto = first.approval_rules[0]
    assert auto.action == admin_pb2.ApprovalRule.ACTION_AUTO_APPROVE and auto.enabled
    assert auto.conditions.token_symbol == "USDC"
    assert auto.conditions.max_amount == str(10_000 * 10**6)
    assert not auto.conditions.HasField("min_amount")
    assert first.next_page_token
    rest = call(
        gateway,
        "ListApprovalRules",
        admin_pb2.ListApprovalRulesRequest(page_token=first.next_page_token),
        viewer,
    )
    positions = [r.position for r in [*first.approval_rules, *rest.approval_rules]]
    assert positions == sorted(positions) and 1000 in positions
    response = httpx.get(f"{gateway.base_url}/v1/admin/approvalRules", headers=viewer.headers)
    assert response.status_code == 200, response.text
    assert response.json()["approvalRules"][0]["action"] == "ACTION_AUTO_APPROVE"


def test_upsert_and_delete_apply_only_when_a_second_admin_confirms(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    name = _id("velocity")
    payload = {
        "name": name,
        "position": 7,
        "action": "REJECT",
        "conditions": {"velocity_hours": 1, "velocity_min_count": 5, "allowlisted": False},
    }
    before = loaded(gateway)
    change = propose(gateway, alice, "rule.upsert", payload)
    assert change.target == f"approvalRules/{name}"
    assert loaded(gateway) == before
    with pytest.raises(grpc.RpcError) as caught:
        confirm(gateway, alice, change)
    assert rich_error(caught.value)[1].reason == "SELF_CONFIRMATION"
    assert loaded(gateway) == before

    assert confirm(gateway, bob, change).state == admin_pb2.Change.STATE_APPLIED
    rule = loaded(gateway)[name]
    assert (rule.position, rule.action, rule.approvals_required) == (7, Action.REJECT, 0)
    assert (rule.velocity_hours, rule.velocity_min_count, rule.allowlisted) == (1, 5, False)
    audit = last_audit(gateway)
    assert (audit.action, audit.target) == ("ConfirmChange", change.name)
    before_value = json.loads(audit.before_value or "{}")
    after_value = json.loads(audit.after_value or "{}")
    assert before_value["value"] is None and after_value["target"] == f"approvalRules/{name}"
    assert after_value["value"]["conditions"] == payload["conditions"]

    # A position held by another rule: the change cannot be applied and stays PROPOSED.
    clash = propose(gateway, bob, "rule.upsert", {**payload, "position": 1000})
    with pytest.raises(grpc.RpcError) as caught:
        confirm(gateway, alice, clash)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "CHANGE_NOT_APPLICABLE"
    assert "default" in (caught.value.details() or "")  # type: ignore[attr-defined]
    assert loaded(gateway)[name].position == 7

    delete = propose(gateway, bob, "rule.delete", {"name": name})
    assert name in loaded(gateway)
    confirm(gateway, alice, delete)
    assert loaded(gateway) == before
    again = propose(gateway, bob, "rule.delete", {"name": name})
    with pytest.raises(grpc.RpcError) as caught:
        confirm(gateway, alice, again)
    assert rich_error(caught.value)[1].reason == "CHANGE_NOT_APPLICABLE"
    with gateway.server.store.sessions() as session:
        assert verify_admin_audit_chain(session)


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"name": "Bad Name!", "position": 1, "action": "REJECT"}, ["change.payload.name"]),
        ({"name": "a", "position": -1, "action": "REJECT"}, ["change.payload.position"]),
        ({"name": "a", "position": 1.5, "action": "REJECT"}, ["change.payload.position"]),
        ({"name": "a", "position": 1, "action": "ALLOW"}, ["change.payload.action"]),
        (
            {"name": "a", "position": 1, "action": "REQUIRE_APPROVALS"},
            ["change.payload.approvals_required"],
        ),
        (
            {"name": "a", "position": 1, "action": "REJECT", "approvals_required": 2},
            ["change.payload.approvals_required"],
        ),
        (
            {"name": "a", "position": 1, "action": "REJECT", "conditions": {"colour": "red"}},
            ["change.payload.conditions.colour"],
        ),
        (
            {"name": "a", "position": 1, "action": "REJECT", "conditions": {"min_amount": 5}},
            ["change.payload.conditions.min_amount"],
        ),
        (
            {
                "name": "a",
                "position": 1,
                "action": "REJECT",
                "conditions": {"min_amount": "10", "max_amount": "10"},
            },
            ["change.payload.conditions.max_amount"],
        ),
        (
            {"name": "a", "position": 1, "action": "REJECT", "conditions": {"velocity_hours": 2}},
            ["change.payload.conditions.velocity_min_count"],
        ),
        (
            {"name": "a", "position": 1, "action": "REJECT", "conditions": {"tier": True}},
            ["change.payload.conditions.tier"],
        ),
        ({"name": "a", "position": 1, "action": "REJECT", "extra": 1}, ["change.payload.extra"]),
    ],
)
def test_bad_rule_payloads_name_their_fields(payload: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(ApiError) as caught:
        rule_admin.validate_upsert(payload)
    assert [v.field for v in caught.value.field_violations] == fields


def test_a_payload_through_struct_reads_as_the_processor_reads_the_row() -> None:
    body = struct_pb2.Struct()
    body.update(
        {
            "name": "usdc-big",
            "position": 30,
            "action": "REQUIRE_APPROVALS",
            "approvals_required": 3,
            "conditions": {"token_symbol": "USDC", "min_amount": "100000000000", "tier": None},
        }
    )
    rule = rule_admin.parse_rule(json_format.MessageToDict(body))
    assert rule == Rule(
        position=30,
        name="usdc-big",
        action=Action.REQUIRE_APPROVALS,
        approvals_required=3,
        token_symbol="USDC",
        min_amount=100_000_000_000,
    )
    assert rule_admin.rule_as_dict(rule)["conditions"] == {
        "token_symbol": "USDC",
        "min_amount": "100000000000",
    }
    assert rule_admin.validate_delete({"name": "usdc-big"}) == "approvalRules/usdc-big"
