"""Any partner's webhook endpoints through the admin API, on a real gateway (MariaDB, gRPC and
REST): the same rules as the partner's own WebhookService (one core), names under
`partners/{partner}/`, the secret shown once, every change and every refused change in the
hash-chained admin audit trail (never a secret), reads not audited."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import rich_error
from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.models import AdminAudit
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope

URL = "http://127.0.0.1:9/hook"  # loopback: this gateway allows it (development setting)


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with database("mariadb", tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(db_url: str, redis_url: str, module_redis_prefix: str) -> Iterator[RunningGateway]:
    settings = GatewaySettings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=module_redis_prefix,
        grpc_port=0,
        http_port=0,
        shutdown_grace_seconds=1.0,
        webhooks_allow_http_loopback=True,
    )
    running = RunningGateway(settings)
    yield running
    running.close()


@pytest.fixture(scope="module")
def operator(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(f"ops-{secrets.token_hex(3)}", Role.OPERATOR)


@pytest.fixture(scope="module")
def viewer(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(f"view-{secrets.token_hex(3)}", Role.VIEWER)


def _partner(gateway: RunningGateway, name: str) -> Partner:
    return gateway.add_partner(f"{name}-{secrets.token_hex(3)}", {Scope.WEBHOOKS_MANAGE})


def _audit(gateway: RunningGateway, operator: OperatorAccount) -> list[AdminAudit]:
    with gateway.server.store.sessions() as session:
        return list(
            session.scalars(
                select(AdminAudit)
                .where(AdminAudit.operator_id == operator.id)
                .order_by(AdminAudit.seq)
            )
        )


def test_an_operator_manages_a_partners_endpoints_and_every_change_is_audited(
    gateway: RunningGateway, operator: OperatorAccount, viewer: OperatorAccount
) -> None:
    partner = _partner(gateway, "hooked")
    parent = f"partners/{partner.id}"
    own = webhooks_pb2_grpc.WebhookServiceStub(gateway.channel)

    created = gateway.admin.CreateWebhookEndpoint(
        admin_pb2.CreateWebhookEndpointRequest(
            parent=parent,
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(
                url=URL, event_types=["withdrawal.completed"], description="ops made"
            ),
        ),
        metadata=operator.metadata,
    )
    assert created.name.startswith(f"{parent}/webhookEndpoints/")
    assert created.secret.startswith("whsec_")
    endpoint_id = created.name.rsplit("/", 1)[1]

    # The partner sees the same endpoint through its own API, named its way, without secret.
    mine = own.ListWebhookEndpoints(
        webhooks_pb2.ListWebhookEndpointsRequest(), metadata=partner.metadata
    )
    assert [e.name for e in mine.webhook_endpoints] == [f"webhookEndpoints/{endpoint_id}"]
    assert mine.webhook_endpoints[0].secret == ""
    assert list(mine.webhook_endpoints[0].event_types) == ["withdrawal.completed"]

    # An endpoint the partner made is visible to a viewer, under the partner.
    theirs = own.CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=URL)
        ),
        metadata=partner.metadata,
    )
    listed = gateway.admin.ListWebhookEndpoints(
        admin_pb2.ListWebhookEndpointsRequest(parent=parent), metadata=viewer.metadata
    )
    theirs_id = theirs.name.rsplit("/", 1)[1]
    assert [e.name for e in listed.webhook_endpoints] == [
        created.name,
        f"{parent}/webhookEndpoints/{theirs_id}",
    ]
    assert all(e.secret == "" for e in listed.webhook_endpoints)
    got = gateway.admin.GetWebhookEndpoint(
        admin_pb2.GetWebhookEndpointRequest(name=created.name), metadata=viewer.metadata
    )
    assert got.name == created.name and got.secret == ""

    updated = gateway.admin.UpdateWebhookEndpoint(
        admin_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(name=created.name, description="new"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=operator.metadata,
    )
    assert updated.description == "new"
    disabled = gateway.admin.DisableWebhookEndpoint(
        admin_pb2.DisableWebhookEndpointRequest(name=created.name), metadata=operator.metadata
    )
    assert disabled.state == webhooks_pb2.ENDPOINT_STATE_DISABLED
    assert disabled.state_reason == "DISABLED_BY_OPERATOR"
    seen = own.GetWebhookEndpoint(
        webhooks_pb2.GetWebhookEndpointRequest(name=f"webhookEndpoints/{endpoint_id}"),
        metadata=partner.metadata,
    )
    assert seen.state_reason == "DISABLED_BY_OPERATOR"
    enabled = gateway.admin.EnableWebhookEndpoint(
        admin_pb2.EnableWebhookEndpointRequest(name=created.name), metadata=operator.metadata
    )
    assert enabled.state == webhooks_pb2.ENDPOINT_STATE_ENABLED
    rotated = gateway.admin.RotateWebhookSecret(
        admin_pb2.RotateWebhookSecretRequest(name=created.name, overlap_seconds=60),
        metadata=operator.metadata,
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    assert rotated.HasField("previous_secret_expire_time")
    attempts = gateway.admin.ListWebhookDeliveryAttempts(
        admin_pb2.ListWebhookDeliveryAttemptsRequest(parent=created.name),
        metadata=viewer.metadata,
    )
    assert list(attempts.attempts) == []
    replayed = gateway.admin.ReplayWebhookEvents(
        admin_pb2.ReplayWebhookEventsRequest(
            name=created.name,
            start_time={"seconds": 0},
            end_time={"seconds": 4_000_000_000},
        ),
        metadata=operator.metadata,
    )
    assert replayed.replayed_count == 0
    gateway.admin.DeleteWebhookEndpoint(
        admin_pb2.DeleteWebhookEndpointRequest(name=created.name), metadata=operator.metadata
    )
    with pytest.raises(grpc.RpcError) as gone:
        own.GetWebhookEndpoint(
            webhooks_pb2.GetWebhookEndpointRequest(name=f"webhookEndpoints/{endpoint_id}"),
            metadata=partner.metadata,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]

    rows = _audit(gateway, operator)
    assert [(r.action, r.outcome, r.target) for r in rows] == [
        ("CreateWebhookEndpoint", "SUCCEEDED", created.name),
        ("UpdateWebhookEndpoint", "SUCCEEDED", created.name),
        ("DisableWebhookEndpoint", "SUCCEEDED", created.name),
        ("EnableWebhookEndpoint", "SUCCEEDED", created.name),
        ("RotateWebhookSecret", "SUCCEEDED", created.name),
        ("ReplayWebhookEvents", "SUCCEEDED", created.name),
        ("DeleteWebhookEndpoint", "SUCCEEDED", created.name),
    ]
    by_action = {r.action: r for r in rows}
    assert '"description":"ops made"' in (by_action["UpdateWebhookEndpoint"].before_value or "")
    assert '"description":"new"' in (by_action["UpdateWebhookEndpoint"].after_value or "")
    assert '"DISABLED_BY_OPERATOR"' in (by_action["DisableWebhookEndpoint"].after_value or "")
    assert by_action["DeleteWebhookEndpoint"].after_value is None
    for row in rows:  # never a secret in the trail
        assert "whsec_" not in f"{row.before_value}{row.after_value}"
    assert _audit(gateway, viewer) == []  # reads are not audited
    with gateway.server.store.sessions() as session:
        verify_admin_audit_chain(session)


def test_refusals_are_the_partner_apis_and_are_audited(
    gateway: RunningGateway, operator: OperatorAccount
) -> None:
    partner, other = _partner(gateway, "owner"), _partner(gateway, "other")
    before = len(_audit(gateway, operator))

    # A private address: the same check, error and field as the partner API.
    with pytest.raises(grpc.RpcError) as refused:
        gateway.admin.CreateWebhookEndpoint(
            admin_pb2.CreateWebhookEndpointRequest(
                parent=f"partners/{partner.id}",
                webhook_endpoint=webhooks_pb2.WebhookEndpoint(url="https://10.1.2.3/hook"),
            ),
            metadata=operator.metadata,
        )
    code, info, fields = rich_error(refused.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "WEBHOOK_URL_REFUSED" and fields == ["webhook_endpoint.url"]

    # An unknown partner, and another partner's endpoint under this partner's name.
    with pytest.raises(grpc.RpcError) as unknown:
        gateway.admin.CreateWebhookEndpoint(
            admin_pb2.CreateWebhookEndpointRequest(
                parent="partners/no-such-partner",
                webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=URL),
            ),
            metadata=operator.metadata,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    theirs = gateway.admin.CreateWebhookEndpoint(
        admin_pb2.CreateWebhookEndpointRequest(
            parent=f"partners/{other.id}", webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=URL)
        ),
        metadata=operator.metadata,
    )
    misnamed = f"partners/{partner.id}/webhookEndpoints/{theirs.name.rsplit('/', 1)[1]}"
    with pytest.raises(grpc.RpcError) as crossed:
        gateway.admin.DisableWebhookEndpoint(
            admin_pb2.DisableWebhookEndpointRequest(name=misnamed), metadata=operator.metadata
        )
    assert crossed.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert misnamed in crossed.value.details()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as malformed:
        gateway.admin.EnableWebhookEndpoint(
            admin_pb2.EnableWebhookEndpointRequest(name="webhookEndpoints/x"),
            metadata=operator.metadata,
        )
    _, _, fields = rich_error(malformed.value)
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert fields == ["name"]

    rows = _audit(gateway, operator)[before:]
    assert [(r.action, r.outcome, r.reason) for r in rows] == [
        ("CreateWebhookEndpoint", "FAILED", "WEBHOOK_URL_REFUSED"),
        ("CreateWebhookEndpoint", "FAILED", "NOT_FOUND"),
        ("CreateWebhookEndpoint", "SUCCEEDED", ""),
        ("DisableWebhookEndpoint", "FAILED", "NOT_FOUND"),
        ("EnableWebhookEndpoint", "FAILED", "INVALID_ARGUMENT"),
    ]


def test_rest_under_v1_admin_with_an_idempotency_key(
    gateway: RunningGateway, operator: OperatorAccount
) -> None:
    partner = _partner(gateway, "rest")
    url = f"{gateway.base_url}/v1/admin/partners/{partner.id}/webhookEndpoints"
    headers = {**operator.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = httpx.post(url, json={"url": URL, "eventTypes": ["withdrawal.failed"]}, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["name"].startswith(f"partners/{partner.id}/webhookEndpoints/")
    assert body["secret"].startswith("whsec_")
    again = httpx.post(url, json={"url": URL, "eventTypes": ["withdrawal.failed"]}, headers=headers)
    assert again.status_code == 200 and again.json()["name"] == body["name"]
    assert "secret" not in again.json() or again.json()["secret"] == ""
    reused = httpx.post(url, json={"url": URL}, headers=headers)
    assert reused.status_code == 409, reused.text

    refused = httpx.post(
        url, json={"url": "https://169.254.169.254/latest"}, headers=operator.headers
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["reason"] == "WEBHOOK_URL_REFUSED"
    listed = httpx.get(url, headers=operator.headers)
    assert [e["name"] for e in listed.json()["webhookEndpoints"]] == [body["name"]]
    partner_key = httpx.get(url, headers=partner.headers)
    assert partner_key.status_code == 401  # the admin API takes operator credentials only
