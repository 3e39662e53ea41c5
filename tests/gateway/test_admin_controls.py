"""The admin API's operational controls on a real gateway (gRPC and REST, MariaDB and
SQLite): partners' API keys (created, listed, revoked, and working or not on the public
API), the payout kill switch, and token settings; each audited with before and after."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import create_request, rich_error
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit
from withdrawal_shared.db.operators import Role
from withdrawal_shared.db.reference import REFERENCE_MAX_AGE_SECONDS

USDC = "chains/polygon/tokens/USDC"


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def admin(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("admin"), Role.ADMIN)


@pytest.fixture(scope="module")
def operator(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("oper"), Role.OPERATOR)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(_id("viewer"), Role.VIEWER)


def call(gateway: RunningGateway, method: str, request: Any, who: OperatorAccount) -> Any:
    return getattr(gateway.admin, method)(request, metadata=who.metadata)


def refused(gateway: RunningGateway, method: str, request: Any, who: OperatorAccount) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        call(gateway, method, request, who)
    return rich_error(caught.value)


def last_audit(gateway: RunningGateway, action: str) -> AdminAudit:
    with gateway.server.store.sessions() as session:
        row = session.scalars(
            select(AdminAudit)
            .where(AdminAudit.action == action)
            .order_by(AdminAudit.seq.desc())
            .limit(1)
        ).one()
        session.expunge(row)
        return row


def values(row: AdminAudit) -> tuple[Any, Any]:
    before = json.loads(row.before_value) if row.before_value else None
    after = json.loads(row.after_value) if row.after_value else None
    return before, after


def chain_verifies(gateway: RunningGateway) -> bool:
    with gateway.server.store.sessions() as session:
        return verify_admin_audit_chain(session)


def works_on_public_api(gateway: RunningGateway, token: str) -> bool:
    try:
        gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        return False
    return True


def eventually(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ---------------------------------------------------------------- API keys


def test_api_keys_created_listed_and_revoked_over_grpc(
    gateway: RunningGateway, partner_a: Partner, operator: OperatorAccount, viewer: OperatorAccount
) -> None:
    parent = f"partners/{partner_a.id}"
    request = admin_pb2.CreateApiKeyRequest(
        parent=parent,
        api_key=admin_pb2.ApiKey(scopes=["withdrawals:read"], rate_limit_per_second=5),
        request_id="key-1",
    )
    created = call(gateway, "CreateApiKey", request, operator)
    assert created.token.startswith(created.prefix + "_") and created.prefix.startswith("awk_")
    assert created.name == f"{parent}/apiKeys/{created.prefix}"
    assert list(created.scopes) == ["withdrawals:read"] and created.rate_limit_per_second == 5
    assert not created.HasField("rate_limit_burst")
    audit = last_audit(gateway, "CreateApiKey")
    assert audit.target == created.name and audit.operator_id == operator.id
    before, after = values(audit)
    assert before is None and after["key"] == created.prefix and after["revoked"] is False
    assert created.token not in (audit.after_value or "")

    # Idempotent on the request id: the same key, without its token; another body is refused.
    repeat = call(gateway, "CreateApiKey", request, operator)
    assert repeat.name == created.name and repeat.token == ""
    other = admin_pb2.CreateApiKeyRequest(parent=parent, request_id="key-1")
    _, info, _ = refused(gateway, "CreateApiKey", other, operator)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED" and info.metadata["api_key"] == created.name

    # The key works on the public API, within its scopes.
    assert works_on_public_api(gateway, created.token)
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(
            create_request(), metadata=(("authorization", f"Bearer {created.token}"),)
        )
    assert rich_error(caught.value)[1].reason == "SCOPE_MISSING"

    listed = call(gateway, "ListApiKeys", admin_pb2.ListApiKeysRequest(parent=parent), viewer)
    mine = [k for k in listed.api_keys if k.name == created.name]
    assert len(mine) == 1 and mine[0].token == "" and not mine[0].HasField("revoke_time")
    assert all(k.token == "" for k in listed.api_keys)
    assert created.name in {k.name for k in listed.api_keys}
    first = call(
        gateway, "ListApiKeys", admin_pb2.ListApiKeysRequest(parent=parent, page_size=1), viewer
    )
    assert len(first.api_keys) == 1 and first.next_page_token  # partner_a's own key too
    second = call(
        gateway,
        "ListApiKeys",
        admin_pb2.ListApiKeysRequest(parent=parent, page_size=1, page_token=first.next_page_token),
        viewer,
    )
    assert second.api_keys[0].name != first.api_keys[0].name

    # A viewer may not revoke; the operator may, and the key stops working at once.
    revoke = admin_pb2.RevokeApiKeyRequest(name=created.name)
    _, info, _ = refused(gateway, "RevokeApiKey", revoke, viewer)
    assert info.reason == "ROLE_REQUIRED" and info.metadata["role"] == "operator"
    revoked = call(gateway, "RevokeApiKey", revoke, operator)
    assert revoked.HasField("revoke_time") and revoked.token == ""
    assert eventually(lambda: not works_on_public_api(gateway, created.token), 3)
    before, after = values(last_audit(gateway, "RevokeApiKey"))
    assert before["revoked"] is False and after["revoked"] is True
    assert after["published"] is True
    again = call(gateway, "RevokeApiKey", revoke, operator)  # idempotent
    assert again.revoke_time == revoked.revoke_time
    assert chain_verifies(gateway)


def test_api_key_errors(
    gateway: RunningGateway, partner_a: Partner, operator: OperatorAccount
) -> None:
    for api_key, field in (
        (admin_pb2.ApiKey(scopes=["root"]), "api_key.scopes"),
        (admin_pb2.ApiKey(rate_limit_burst=3), "api_key.rate_limit_burst"),
        (admin_pb2.ApiKey(rate_limit_per_second=0), "api_key.rate_limit_per_second"),
    ):
        request = admin_pb2.CreateApiKeyRequest(parent=f"partners/{partner_a.id}", api_key=api_key)
        code, _, fields = refused(gateway, "CreateApiKey", request, operator)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field]
    code, _, _ = refused(
        gateway,
        "CreateApiKey",
        admin_pb2.CreateApiKeyRequest(parent="partners/no-such-partner"),
        operator,
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert last_audit(gateway, "CreateApiKey").outcome == "FAILED"
    code, _, _ = refused(
        gateway,
        "RevokeApiKey",
        admin_pb2.RevokeApiKeyRequest(name=f"partners/{partner_a.id}/apiKeys/awk_00000000"),
        operator,
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, fields = refused(
        gateway, "RevokeApiKey", admin_pb2.RevokeApiKeyRequest(name="keys/x"), operator
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["name"]


def test_api_keys_over_rest(
    gateway: RunningGateway, partner_b: Partner, operator: OperatorAccount
) -> None:
    base = f"{gateway.base_url}/v1/admin/partners/{partner_b.id}/apiKeys"
    response = httpx.post(
        base,
        json={"scopes": ["withdrawals:read", "withdrawals:create"]},
        headers={**operator.headers, "Idempotency-Key": _id("rest-key")},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert works_on_public_api(gateway, created["token"])
    listed = httpx.get(base, headers=operator.headers)
    assert listed.status_code == 200
    assert created["name"] in {k["name"] for k in listed.json()["apiKeys"]}
    assert all(not k.get("token") for k in listed.json()["apiKeys"])
    revoked = httpx.post(
        f"{gateway.base_url}/v1/admin/{created['name']}:revoke", json={}, headers=operator.headers
    )
    assert revoked.status_code == 200, revoked.text
    assert "revokeTime" in revoked.json()
    assert eventually(lambda: not works_on_public_api(gateway, created["token"]), 3)


# ---------------------------------------------------------------- the kill switch


def test_pause_and_resume_over_grpc(
    gateway: RunningGateway, operator: OperatorAccount, viewer: OperatorAccount
) -> None:
    scope = admin_pb2.PayoutScope(chain="polygon", token="USDC")
    pause = admin_pb2.PausePayoutsRequest(scope=scope, reason="incident 42")
    _, info, _ = refused(gateway, "PausePayouts", pause, viewer)
    assert info.reason == "ROLE_REQUIRED" and info.metadata["role"] == "operator"
    assert last_audit(gateway, "PausePayouts").outcome == "DENIED"

    paused = call(gateway, "PausePayouts", pause, operator)
    assert paused.paused and paused.scope_key == "polygon/USDC"
    assert paused.reason == "incident 42" and paused.actor == operator.id
    before, after = values(last_audit(gateway, "PausePayouts"))
    assert before["paused"] is False and after["paused"] is True
    assert after["reason"] == "incident 42"
    listed = call(gateway, "ListPayoutPauses", admin_pb2.ListPayoutPausesRequest(), viewer)
    assert [p.scope_key for p in listed.payout_pauses] == ["polygon/USDC"]
    assert listed.payout_pauses[0].scope == scope

    again = call(  # idempotent: the first reason stays
        gateway, "PausePayouts", admin_pb2.PausePayoutsRequest(scope=scope, reason="x"), operator
    )
    assert again.reason == "incident 42" and again.update_time == paused.update_time

    resumed = call(gateway, "ResumePayouts", admin_pb2.ResumePayoutsRequest(scope=scope), operator)
    assert not resumed.paused
    before, after = values(last_audit(gateway, "ResumePayouts"))
    assert before["paused"] is True and after["paused"] is False
    listed = call(gateway, "ListPayoutPauses", admin_pb2.ListPayoutPausesRequest(), viewer)
    assert list(listed.payout_pauses) == []
    everything = call(
        gateway,
        "ListPayoutPauses",
        admin_pb2.ListPayoutPausesRequest(show_resumed=True),
        viewer,
    )
    assert {"*", "polygon/USDC"} <= {p.scope_key for p in everything.payout_pauses}
    assert chain_verifies(gateway)


def test_pause_errors(gateway: RunningGateway, operator: OperatorAccount) -> None:
    cases = [
        (admin_pb2.PausePayoutsRequest(reason="r"), ["scope"]),
        (admin_pb2.PausePayoutsRequest(scope=admin_pb2.PayoutScope()), ["reason"]),
        (
            admin_pb2.PausePayoutsRequest(scope=admin_pb2.PayoutScope(chain="solana"), reason="r"),
            ["scope.chain"],
        ),
        (
            admin_pb2.PausePayoutsRequest(
                scope=admin_pb2.PayoutScope(chain="polygon", token="XYZ"), reason="r"
            ),
            ["scope.token"],
        ),
    ]
    for request, expected in cases:
        code, _, fields = refused(gateway, "PausePayouts", request, operator)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == expected
    assert last_audit(gateway, "PausePayouts").outcome == "FAILED"


def test_pause_everything_over_rest(
    gateway: RunningGateway, operator: OperatorAccount, viewer: OperatorAccount
) -> None:
    base = f"{gateway.base_url}/v1/admin/payoutPauses"
    denied = httpx.post(
        f"{base}:pause", json={"scope": {}, "reason": "drill"}, headers=viewer.headers
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["details"][0]["reason"] == "ROLE_REQUIRED"
    paused = httpx.post(
        f"{base}:pause", json={"scope": {}, "reason": "drill"}, headers=operator.headers
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["scopeKey"] == "*" and paused.json()["paused"] is True
    listed = httpx.get(base, headers=viewer.headers).json()
    assert [p["scopeKey"] for p in listed["payoutPauses"]] == ["*"]
    resumed = httpx.post(f"{base}:resume", json={"scope": {}}, headers=operator.headers)
    assert resumed.status_code == 200 and resumed.json().get("paused", False) is False
    assert httpx.get(base, headers=viewer.headers).json().get("payoutPauses", []) == []


# ---------------------------------------------------------------- tokens


@pytest.fixture
def usdc_restored(gateway: RunningGateway, admin: OperatorAccount) -> Iterator[None]:
    original = call(
        gateway, "ListTokens", admin_pb2.ListTokensRequest(parent="chains/polygon"), admin
    )
    usdc = next(t for t in original.tokens if t.name == USDC)
    yield
    restore = admin_pb2.UpdateTokenRequest(
        token=admin_pb2.Token(name=USDC, enabled=usdc.enabled, max_amount=usdc.max_amount),
        update_mask=field_mask_pb2.FieldMask(paths=["*"]),
    )
    call(gateway, "UpdateToken", restore, admin)


def test_update_token_max_amount_applies_and_is_audited(
    gateway: RunningGateway,
    partner_a: Partner,
    admin: OperatorAccount,
    operator: OperatorAccount,
    usdc_restored: None,
) -> None:
    listed = call(gateway, "ListTokens", admin_pb2.ListTokensRequest(parent="chains/-"), operator)
    usdc = next(t for t in listed.tokens if t.name == USDC)
    assert usdc.decimals == 6 and usdc.enabled and usdc.max_amount == "1000000"

    update = admin_pb2.UpdateTokenRequest(
        token=admin_pb2.Token(name=USDC, max_amount="100.5"),
        update_mask=field_mask_pb2.FieldMask(paths=["max_amount"]),
    )
    _, info, _ = refused(gateway, "UpdateToken", update, operator)  # only admin
    assert info.reason == "ROLE_REQUIRED" and info.metadata["role"] == "admin"
    updated = call(gateway, "UpdateToken", update, admin)
    assert updated.max_amount == "100.5" and updated.enabled
    audit = last_audit(gateway, "UpdateToken")
    before, after = values(audit)
    assert (audit.outcome, audit.target, audit.operator_id) == ("SUCCEEDED", USDC, admin.id)
    assert before["max_amount"] == "1000000" and after["max_amount"] == "100.5"
    assert after["max_amount_base_units"] == "100500000"  # a string: money is never a float

    # Within the reference cache's max age a create above the new maximum is refused.
    def refused_above() -> bool:
        try:
            gateway.stub.CreateWithdrawal(
                create_request(amount="100.6"), metadata=partner_a.metadata
            )
        except grpc.RpcError as exc:
            return rich_error(exc)[1].reason == "AMOUNT_ABOVE_MAXIMUM"
        return False

    assert eventually(refused_above, REFERENCE_MAX_AGE_SECONDS + 1)
    gateway.stub.CreateWithdrawal(create_request(amount="100.5"), metadata=partner_a.metadata)

    bad = admin_pb2.UpdateTokenRequest(token=admin_pb2.Token(name=USDC, max_amount="1.0000001"))
    _, _, fields = refused(gateway, "UpdateToken", bad, admin)
    assert fields == ["token.max_amount"]
    assert chain_verifies(gateway)


def test_update_token_over_rest(
    gateway: RunningGateway, admin: OperatorAccount, usdc_restored: None
) -> None:
    url = f"{gateway.base_url}/v1/admin/{USDC}"
    disabled = httpx.patch(
        f"{url}?updateMask=enabled", json={"enabled": False}, headers=admin.headers
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    before, after = values(last_audit(gateway, "UpdateToken"))
    assert before["enabled"] is True and after["enabled"] is False
    listed = httpx.get(f"{gateway.base_url}/v1/admin/chains/polygon/tokens", headers=admin.headers)
    assert listed.status_code == 200
    assert [t["enabled"] for t in listed.json()["tokens"] if t["name"] == USDC] == [False]
    missing = httpx.patch(
        f"{gateway.base_url}/v1/admin/chains/polygon/tokens/XYZ",
        json={"enabled": True},
        headers=admin.headers,
    )
    assert missing.status_code == 404
    mask = httpx.patch(f"{url}?updateMask=symbol", json={"enabled": True}, headers=admin.headers)
    assert mask.status_code == 400
    violations = mask.json()["error"]["details"][1]["fieldViolations"]
    assert [v["field"] for v in violations] == ["updateMask"]
    no_chain = httpx.get(f"{gateway.base_url}/v1/admin/chains/solana/tokens", headers=admin.headers)
    assert no_chain.status_code == 404
    document = httpx.get(f"{gateway.base_url}/openapi.json").json()
    assert "patch" in document["paths"]["/v1/admin/chains/{chain}/tokens/{token}"]
    assert "/v1/admin/payoutPauses:pause" in document["paths"]
