"""The authorization matrix: every RPC the gateway serves (from the reflected descriptors,
health and reflection aside) and every REST route (from the served OpenAPI document), called
by every kind of caller, gets exactly the outcome `EXPECTED` (the one table below) says.

Outcome classes: UNAUTHENTICATED (401), PERMISSION_DENIED with SCOPE_MISSING or ROLE_REQUIRED
(403), NOT_FOUND (404: another partner's resource, never its data), or ALLOWED (whatever the
handler itself answers: OK, a validation or precondition error; never 401, a missing scope or
role, or an internal error). A route's HTTP status is the mapping of the gRPC code of the
same call. An RPC or route without a row fails, naming it; so does a row naming neither.

One gateway on MariaDB for the module (the backends are covered elsewhere). Requests are the
empty request with its path fields set to resources that exist (the withdrawal is partner
A's), plus a real body where an empty one says nothing (`REQUEST_BODIES`). Mutating admin
calls act on throwaway resources (an operator, a key, a change) nobody else uses.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import select, update

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import OperatorAccount, Partner, RunningGateway
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner, revoke_api_key
from withdrawal_shared.db.models import AdminAudit, OperatorCredential
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope

# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Public:
    """A partner-API RPC: the scope its key must hold; `owns` says whether it acts on one
    partner's withdrawal (`resource`: another partner gets NOT_FOUND), lists one partner's
    withdrawal's state changes (`trail`: the same, and the answer names the withdrawal
    without showing its recipient) or acts on its webhook endpoint (`endpoint`: the same; the
    answer need not show the withdrawal), lists the caller's own (`listing`: another
    partner's never appear), or neither."""

    scope: Scope
    routes: tuple[str, ...]
    owns: str = ""


@dataclass(frozen=True)
class Admin:
    """An admin-API RPC: the role its operator must hold (any role grants `viewer`)."""

    role: Role
    routes: tuple[str, ...]


W = "assetwithdrawal.withdrawal.v1.WithdrawalService."
B = "assetwithdrawal.withdrawal.v1.BatchService."
BC = Scope.BATCHES_CREATE
A = "assetwithdrawal.admin.v1.AdminService."
H = "assetwithdrawal.webhooks.v1.WebhookService."
R = Scope.WITHDRAWALS_READ
C = Scope.WITHDRAWALS_CREATE
M = Scope.WEBHOOKS_MANAGE

EXPECTED: dict[str, Public | Admin] = {
    W + "CreateWithdrawal": Public(C, ("POST /v1/withdrawals",)),
    W + "GetWithdrawal": Public(R, ("GET /v1/withdrawals/{withdrawal}",), owns="resource"),
    W + "ListWithdrawals": Public(R, ("GET /v1/withdrawals",), owns="listing"),
    W + "CancelWithdrawal": Public(
        C, ("POST /v1/withdrawals/{withdrawal}:cancel",), owns="resource"
    ),
    W + "WatchWithdrawal": Public(R, ("GET /v1/withdrawals/{withdrawal}:watch",), owns="resource"),
    W + "ListStateChanges": Public(
        R, ("GET /v1/withdrawals/{withdrawal}/stateChanges",), owns="trail"
    ),
    B + "CreateBatch": Public(BC, ("POST /v1/batches",)),
    B + "GetBatch": Public(R, ("GET /v1/batches/{batch}",), owns="batch"),
    B + "ListBatches": Public(R, ("GET /v1/batches",), owns="listing"),
    B + "CancelBatch": Public(BC, ("POST /v1/batches/{batch}:cancel",), owns="batch"),
    B + "GetBatchReport": Public(R, ("GET /v1/batches/{batch}/report",), owns="batch"),
    B + "WatchBatch": Public(R, ("GET /v1/batches/{batch}:watch",), owns="batch"),
    H + "CreateWebhookEndpoint": Public(M, ("POST /v1/webhookEndpoints",)),
    H + "ListWebhookEndpoints": Public(M, ("GET /v1/webhookEndpoints",), owns="listing"),
    H + "GetWebhookEndpoint": Public(
        M, ("GET /v1/webhookEndpoints/{webhookEndpoint}",), owns="endpoint"
    ),
    H + "UpdateWebhookEndpoint": Public(
        M, ("PATCH /v1/webhookEndpoints/{webhookEndpoint}",), owns="endpoint"
    ),
    H + "DeleteWebhookEndpoint": Public(
        M, ("DELETE /v1/webhookEndpoints/{webhookEndpoint}",), owns="endpoint"
    ),
    H + "DisableWebhookEndpoint": Public(
        M, ("POST /v1/webhookEndpoints/{webhookEndpoint}:disable",), owns="endpoint"
    ),
    H + "EnableWebhookEndpoint": Public(
        M, ("POST /v1/webhookEndpoints/{webhookEndpoint}:enable",), owns="endpoint"
    ),
    H + "RotateWebhookSecret": Public(
        M, ("POST /v1/webhookEndpoints/{webhookEndpoint}:rotateSecret",), owns="endpoint"
    ),
    H + "ListWebhookDeliveryAttempts": Public(
        M, ("GET /v1/webhookEndpoints/{webhookEndpoint}/deliveryAttempts",), owns="endpoint"
    ),
    H + "ReplayWebhookEvents": Public(
        M, ("POST /v1/webhookEndpoints/{webhookEndpoint}:replay",), owns="endpoint"
    ),
    A + "GetOperator": Admin(Role.VIEWER, ("GET /v1/admin/operators/{operator}",)),
    A + "ListOperators": Admin(Role.VIEWER, ("GET /v1/admin/operators",)),
    A + "CreateChange": Admin(Role.ADMIN, ("POST /v1/admin/changes",)),
    A + "GetChange": Admin(Role.VIEWER, ("GET /v1/admin/changes/{change}",)),
    A + "ListChanges": Admin(Role.VIEWER, ("GET /v1/admin/changes",)),
    A + "ConfirmChange": Admin(Role.ADMIN, ("POST /v1/admin/changes/{change}:confirm",)),
    A + "RejectChange": Admin(Role.ADMIN, ("POST /v1/admin/changes/{change}:reject",)),
    A + "CreateOperatorCredential": Admin(
        Role.ADMIN, ("POST /v1/admin/operators/{operator}/credentials",)
    ),
    A + "RevokeOperatorCredential": Admin(
        Role.ADMIN, ("POST /v1/admin/operators/{operator}/credentials/{credential}:revoke",)
    ),
    A + "ListAdminAuditEntries": Admin(Role.VIEWER, ("GET /v1/admin/auditEntries",)),
    A + "CreateApiKey": Admin(Role.OPERATOR, ("POST /v1/admin/partners/{partner}/apiKeys",)),
    A + "ListApiKeys": Admin(Role.VIEWER, ("GET /v1/admin/partners/{partner}/apiKeys",)),
    A + "RevokeApiKey": Admin(
        Role.OPERATOR, ("POST /v1/admin/partners/{partner}/apiKeys/{apiKey}:revoke",)
    ),
    A + "ListPayoutPauses": Admin(Role.VIEWER, ("GET /v1/admin/payoutPauses",)),
    A + "PausePayouts": Admin(Role.OPERATOR, ("POST /v1/admin/payoutPauses:pause",)),
    A + "ResumePayouts": Admin(Role.OPERATOR, ("POST /v1/admin/payoutPauses:resume",)),
    A + "ListTokens": Admin(Role.VIEWER, ("GET /v1/admin/chains/{chain}/tokens",)),
    A + "UpdateToken": Admin(Role.ADMIN, ("PATCH /v1/admin/chains/{chain}/tokens/{token}",)),
    A + "ListPendingApprovals": Admin(Role.VIEWER, ("GET /v1/admin/pendingApprovals",)),
    A + "ApproveWithdrawal": Admin(
        Role.APPROVER, ("POST /v1/admin/withdrawals/{withdrawal}:approve",)
    ),
    A + "RejectWithdrawal": Admin(
        Role.APPROVER, ("POST /v1/admin/withdrawals/{withdrawal}:reject",)
    ),
    A + "ApproveBatch": Admin(Role.APPROVER, ("POST /v1/admin/batches/{batch}:approve",)),
    A + "RejectBatch": Admin(Role.APPROVER, ("POST /v1/admin/batches/{batch}:reject",)),
    A + "ListBlockedAddresses": Admin(Role.VIEWER, ("GET /v1/admin/blockedAddresses",)),
    A + "BlockAddress": Admin(Role.OPERATOR, ("POST /v1/admin/blockedAddresses",)),
    A + "UnblockAddress": Admin(
        Role.OPERATOR, ("POST /v1/admin/blockedAddresses/{blockedAddress}:unblock",)
    ),
    A + "ListTiers": Admin(Role.VIEWER, ("GET /v1/admin/tiers",)),
    A + "ListApprovalRules": Admin(Role.VIEWER, ("GET /v1/admin/approvalRules",)),
    A + "CreateWebhookEndpoint": Admin(
        Role.OPERATOR, ("POST /v1/admin/partners/{partner}/webhookEndpoints",)
    ),
    A + "ListWebhookEndpoints": Admin(
        Role.VIEWER, ("GET /v1/admin/partners/{partner}/webhookEndpoints",)
    ),
    A + "GetWebhookEndpoint": Admin(
        Role.VIEWER, ("GET /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}",)
    ),
    A + "UpdateWebhookEndpoint": Admin(
        Role.OPERATOR, ("PATCH /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}",)
    ),
    A + "DeleteWebhookEndpoint": Admin(
        Role.OPERATOR,
        ("DELETE /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}",),
    ),
    A + "DisableWebhookEndpoint": Admin(
        Role.OPERATOR,
        ("POST /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}:disable",),
    ),
    A + "EnableWebhookEndpoint": Admin(
        Role.OPERATOR,
        ("POST /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}:enable",),
    ),
    A + "RotateWebhookSecret": Admin(
        Role.OPERATOR,
        ("POST /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}:rotateSecret",),
    ),
    A + "ListWebhookDeliveryAttempts": Admin(
        Role.VIEWER,
        ("GET /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}/deliveryAttempts",),
    ),
    A + "ReplayWebhookEvents": Admin(
        Role.OPERATOR,
        ("POST /v1/admin/partners/{partner}/webhookEndpoints/{webhookEndpoint}:replay",),
    ),
}
"""Full method name -> who may call it. Routes are `VERB /path` as the OpenAPI document
writes them."""

# The caller kinds.
NONE = "no credential"
UNKNOWN_KEY = "unknown API key"
REVOKED_KEY = "revoked API key"
LACKING_SCOPE = "partner key without the scope"
WITH_SCOPE = "partner key with the scope"
OTHER_PARTNER = "another partner's key"
NO_ROLE = "operator holding no role"
UNKNOWN_OPERATOR = "unknown operator credential"
REVOKED_OPERATOR = "revoked operator credential"
ROLE_CALLERS = {role: f"{role.value} operator" for role in Role}
CALLERS = (
    NONE,
    UNKNOWN_KEY,
    REVOKED_KEY,
    LACKING_SCOPE,
    WITH_SCOPE,
    OTHER_PARTNER,
    *ROLE_CALLERS.values(),
    NO_ROLE,
    UNKNOWN_OPERATOR,
    REVOKED_OPERATOR,
)

UNAUTHENTICATED = "UNAUTHENTICATED"
SCOPE_MISSING = "SCOPE_MISSING"
ROLE_REQUIRED = "ROLE_REQUIRED"
NOT_FOUND = "NOT_FOUND"
ALLOWED = "ALLOWED"


def expected(row: Public | Admin, caller: str) -> str:
    """The outcome class the table gives `caller` on `row`'s RPC."""
    if isinstance(row, Public):
        if caller == LACKING_SCOPE:
            return SCOPE_MISSING
        if caller == WITH_SCOPE:
            return ALLOWED
        if caller == OTHER_PARTNER:
            return NOT_FOUND if row.owns in ("resource", "trail", "batch", "endpoint") else ALLOWED
        return UNAUTHENTICATED  # no key, a dead key, or any operator credential
    for role, name in ROLE_CALLERS.items():
        if caller == name:
            return ALLOWED if role is row.role or row.role is Role.VIEWER else ROLE_REQUIRED
    if caller == NO_ROLE:
        return ROLE_REQUIRED
    return UNAUTHENTICATED  # no credential, a dead one, or any partner key


# The standard gRPC -> HTTP mapping (google/rpc/code.proto), written out independently.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def outcome_class(code: grpc.StatusCode, reason: str) -> str:
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return UNAUTHENTICATED
    if code == grpc.StatusCode.PERMISSION_DENIED and reason in (SCOPE_MISSING, ROLE_REQUIRED):
        return reason
    if code == grpc.StatusCode.NOT_FOUND:
        return NOT_FOUND
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return f"an internal error ({code.name})"
    return ALLOWED


# ---------------------------------------------------------------- what the gateway serves

SKIPPED_SERVICES = {health.SERVICE_NAME, reflection.SERVICE_NAME}


def served_methods(channel: grpc.Channel) -> dict[str, MethodDescriptor]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(iter(stub.ServerReflectionInfo(iter([request]))))
    pool = descriptor_pool.Default()
    methods: dict[str, MethodDescriptor] = {}
    for listed in answer.list_services_response.service:
        if listed.name in SKIPPED_SERVICES:
            continue
        service: ServiceDescriptor = pool.FindServiceByName(listed.name)
        for method in service.methods:
            methods[method.full_name] = method
    return methods


def served_routes(document: dict[str, Any]) -> dict[str, str]:
    """`VERB /path` -> its operationId, for every operation of the OpenAPI document."""
    return {
        f"{verb.upper()} {path}": operation.get("operationId", "")
        for path, operations in document["paths"].items()
        for verb, operation in operations.items()
        if verb in ("get", "put", "post", "delete", "patch")
    }


def http_bindings(method: MethodDescriptor) -> list[tuple[str, str]]:
    """(VERB, template) of each google.api.http binding of the method."""
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
    found = []
    for one in (rule, *rule.additional_bindings):
        kind = one.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            found.append((one.custom.kind.upper(), one.custom.path))
        else:
            found.append((kind.upper(), getattr(one, kind)))
    return found


_VARIABLE = re.compile(r"\{([a-z_.]+)(?:=([^}]*))?\}")


def path_fields(template: str, path: str) -> dict[str, str] | None:
    """The request fields a URL path sets under an http rule template, None if no match."""
    parts, fields, at = [], [], 0
    for var in _VARIABLE.finditer(template):
        parts.append(re.escape(template[at : var.start()]))
        segments = (var.group(2) or "*").split("/")
        pattern = "/".join(
            "[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s) for s in segments
        )
        parts.append(f"({pattern})")
        fields.append(var.group(1))
        at = var.end()
    parts.append(re.escape(template[at:]))
    match = re.fullmatch("".join(parts), path)
    return None if match is None else dict(zip(fields, match.groups(), strict=True))


def set_field(message: Message, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        message = getattr(message, name)
    setattr(message, last, value)


# ---------------------------------------------------------------- requests


def _create_body() -> tuple[Message, dict[str, Any], dict[str, str]]:
    body = {"token": "USDC", "recipientAddress": fresh_address(), "amount": "1"}
    return create_request(amount="1"), body, {"Idempotency-Key": str(uuid.uuid4())}


def _webhook_body() -> tuple[Message, dict[str, Any], dict[str, str]]:
    url = "http://127.0.0.1:9/hook"  # loopback: this gateway allows it (development setting)
    request = webhooks_pb2.CreateWebhookEndpointRequest(
        webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=url)
    )
    return request, {"url": url}, {"Idempotency-Key": str(uuid.uuid4())}


def _admin_webhook_body() -> tuple[Message, dict[str, Any], dict[str, str]]:
    url = "http://127.0.0.1:9/hook"
    request = admin_pb2.CreateWebhookEndpointRequest(
        webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=url)
    )
    return request, {"url": url}, {"Idempotency-Key": str(uuid.uuid4())}


REQUEST_BODIES: dict[str, Callable[[], tuple[Message, dict[str, Any], dict[str, str]]]] = {
    W + "CreateWithdrawal": _create_body,
    H + "CreateWebhookEndpoint": _webhook_body,
    A + "CreateWebhookEndpoint": _admin_webhook_body,
}
"""Methods whose empty request would only test validation: (gRPC request, REST body, REST
headers), made fresh for each call, with the path fields of the route set on the gRPC
request. The others send the empty request (`{}` on REST) with its path fields set."""


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MariaDB only: the matrix is about the gateway, not the backend."""
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
        watch_poll_seconds=0.5,
        shutdown_grace_seconds=1.0,
        webhooks_allow_http_loopback=True,
    )
    running = RunningGateway(settings)
    yield running
    running.close()


def _endpoint(gateway: RunningGateway, partner: Partner) -> str:
    """A webhook endpoint of `partner`'s, made through the API: its id."""
    created = webhooks_pb2_grpc.WebhookServiceStub(gateway.channel).CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(url="http://127.0.0.1:9/hook")
        ),
        metadata=partner.metadata,
    )
    return str(created.name).removeprefix("webhookEndpoints/")


FRESH_PATH_VALUES: dict[str, str] = {
    H + "DeleteWebhookEndpoint": "webhookEndpoint",
    A + "DeleteWebhookEndpoint": "webhookEndpoint",
}
"""Methods that remove the resource they name: each call gets a new one of partner A's."""


@dataclass
class World:
    gateway: RunningGateway
    methods: dict[str, MethodDescriptor]
    routes: dict[str, str]
    path_values: dict[str, str]
    """OpenAPI path parameter -> the existing resource it names."""
    tokens: dict[str, str | None]
    """Caller kind -> its bearer token (None: no header); partner keys by scope below."""
    key_with: dict[Scope, str]
    key_without: dict[Scope, str]
    operator_ids: dict[str, str]
    secret: str
    """Partner A's withdrawal's recipient: no other caller may ever see it."""
    owner: Partner | None = None

    def token(self, row: Public | Admin, caller: str) -> str | None:
        if caller in (LACKING_SCOPE, WITH_SCOPE):
            scope = row.scope if isinstance(row, Public) else Scope.WITHDRAWALS_READ
            return (self.key_without if caller == LACKING_SCOPE else self.key_with)[scope]
        return self.tokens[caller]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _partner_key(gateway: RunningGateway, partner_id: str, scopes: set[Scope]) -> tuple[str, str]:
    with gateway.server.store.sessions.begin() as session:
        created = create_api_key(session, partner_id, scopes)
    return created.token, created.key.prefix


@pytest.fixture(scope="module")
def world(gateway: RunningGateway) -> World:
    every = set(Scope)
    a, b = _id("partner-a"), _id("partner-b")
    with gateway.server.store.sessions.begin() as session:
        ensure_partner(session, a)
        ensure_partner(session, b)
    key_with = {s: _partner_key(gateway, a, {s})[0] for s in Scope}
    key_without = {s: _partner_key(gateway, a, every - {s})[0] for s in Scope}
    owner = Partner(a, _partner_key(gateway, a, every)[0])
    other = _partner_key(gateway, b, every)[0]
    revoked, revoked_prefix = _partner_key(gateway, a, every)
    _, throwaway_key = _partner_key(gateway, a, every)  # for RevokeApiKey
    with gateway.server.store.sessions.begin() as session:
        revoke_api_key(session, a, revoked_prefix)  # never used before: never cached

    recipient = fresh_address()
    created = gateway.stub.CreateWithdrawal(
        create_request(recipient=recipient), metadata=owner.metadata
    )
    batch = httpx.post(
        f"{gateway.base_url}/v1/batches",
        content=f"recipient_address,amount,token\r\n{fresh_address()},1,USDC\r\n".encode(),
        headers={**owner.headers, "Idempotency-Key": _id("batch"), "Content-Type": "text/csv"},
    ).json()
    operators = {
        name: gateway.add_operator(_id(role.value), role) for role, name in ROLE_CALLERS.items()
    }
    operators[NO_ROLE] = gateway.add_operator(_id("norole"))
    dead = gateway.add_operator(_id("dead"), *Role)
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            update(OperatorCredential)
            .where(OperatorCredential.operator_id == dead.id)
            .values(revoke_time=OperatorCredential.create_time)
        )
    # Throwaway resources for the admin methods that change something.
    target = gateway.add_operator(_id("target"), Role.VIEWER)
    proposer = gateway.add_operator(_id("proposer"), Role.ADMIN)
    change = _propose(gateway, proposer, {"operator": _id("newcomer"), "roles": ["viewer"]})
    with gateway.server.store.sessions() as session:
        credential = session.scalars(
            select(OperatorCredential.prefix).where(OperatorCredential.operator_id == target.id)
        ).one()

    document = httpx.get(f"{gateway.base_url}/openapi.json").json()
    return World(
        gateway=gateway,
        methods=served_methods(gateway.channel),
        routes=served_routes(document),
        path_values={
            "withdrawal": created.name.removeprefix("withdrawals/"),
            "batch": batch["name"].removeprefix("batches/"),
            "operator": target.id,
            "credential": credential.split("_", 1)[1],
            "change": change.removeprefix("changes/"),
            "partner": a,
            "apiKey": throwaway_key,
            "chain": "polygon",
            "token": "USDC",
            # Never a recipient here: blocking and unblocking it changes nothing that matters.
            "blockedAddress": "0x" + "ab" * 20,
            "webhookEndpoint": _endpoint(gateway, owner),
        },
        tokens={
            NONE: None,
            UNKNOWN_KEY: "awk_0badc0de_" + "0" * 64,
            REVOKED_KEY: revoked,
            OTHER_PARTNER: other,
            **{name: account.credential for name, account in operators.items()},
            UNKNOWN_OPERATOR: "awo_0badc0de_" + "0" * 64,
            REVOKED_OPERATOR: dead.credential,
        },
        key_with=key_with,
        key_without=key_without,
        operator_ids={name: account.id for name, account in operators.items()},
        secret=recipient.lower(),
        owner=owner,
    )


def _propose(gateway: RunningGateway, who: OperatorAccount, payload: dict[str, Any]) -> str:
    body = struct_pb2.Struct()
    body.update(payload)
    change = gateway.admin.CreateChange(
        admin_pb2.CreateChangeRequest(
            change=admin_pb2.Change(kind="operator.create", payload=body)
        ),
        metadata=who.metadata,
    )
    return str(change.name)


# ---------------------------------------------------------------- calling


@dataclass(frozen=True)
class Seen:
    outcome: str  # the class, with the scope or role a denial names
    code: grpc.StatusCode
    text: str  # what came back (response or error), to look for another partner's data


def _classify(code: grpc.StatusCode, info: error_details_pb2.ErrorInfo | dict[str, Any]) -> str:
    reason = (
        info.reason if isinstance(info, error_details_pb2.ErrorInfo) else info.get("reason", "")
    )
    metadata = dict(
        info.metadata if isinstance(info, error_details_pb2.ErrorInfo) else info.get("metadata", {})
    )
    outcome = outcome_class(code, reason)
    if outcome == SCOPE_MISSING:
        return f"{outcome} {metadata.get('scope')}"
    if outcome == ROLE_REQUIRED:
        return f"{outcome} {metadata.get('role')}"
    return outcome


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


def call_grpc(world: World, method: MethodDescriptor, request: Message, token: str | None) -> Seen:
    path = f"/{method.containing_service.full_name}/{method.name}"
    output = message_factory.GetMessageClass(method.output_type)
    channel = world.gateway.channel
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=output.FromString,
            )(request, metadata=_metadata(token), timeout=10)
            first = next(iter(stream))  # the current state; the stream would go on
            stream.cancel()
            return Seen(ALLOWED, grpc.StatusCode.OK, str(first))
        response = channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=output.FromString,
        )(request, metadata=_metadata(token), timeout=10)
        return Seen(ALLOWED, grpc.StatusCode.OK, str(response))
    except grpc.RpcError as exc:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        info = error_details_pb2.ErrorInfo()
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
        code = exc.code()  # type: ignore[attr-defined]
        return Seen(_classify(code, info), code, f"{exc.details()} {status}")  # type: ignore[attr-defined]


def call_rest(
    world: World, verb: str, url: str, body: dict[str, Any] | None, headers: dict[str, str]
) -> tuple[int, Seen]:
    content = None if verb in ("GET", "DELETE") else json.dumps(body or {}).encode()
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    with httpx.stream(
        verb, world.gateway.base_url + url, content=content, headers=headers, timeout=10
    ) as response:
        if response.headers.get("content-type", "").startswith("application/x-ndjson"):
            text = next(response.iter_lines())  # the first line; the stream would go on
        else:
            text = response.read().decode()
    status = response.status_code
    code = {v: k for k, v in HTTP_STATUS.items() if k not in _AMBIGUOUS}.get(status)
    if status == 200:
        return status, Seen(ALLOWED, grpc.StatusCode.OK, text)
    error = json.loads(text).get("error", {})
    info = next((d for d in error.get("details", []) if "reason" in d), {})
    guess = code or grpc.StatusCode.UNKNOWN
    return status, Seen(_classify(guess, info), guess, text)


# Statuses several codes map to: the REST outcome class is read from the status and reason.
_AMBIGUOUS = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNKNOWN,
}


# ---------------------------------------------------------------- the tests


def test_every_rpc_and_route_has_exactly_one_row(world: World) -> None:
    listed = {route: name for name, row in EXPECTED.items() for route in row.routes}
    problems = {
        "RPCs without a row in EXPECTED": sorted(set(world.methods) - set(EXPECTED)),
        "rows naming no RPC the gateway serves": sorted(set(EXPECTED) - set(world.methods)),
        "REST routes (OpenAPI) without a row in EXPECTED": sorted(set(world.routes) - set(listed)),
        "rows naming routes the OpenAPI document lacks": sorted(set(listed) - set(world.routes)),
        "routes in the row of another RPC than their operationId": sorted(
            f"{route} ({world.routes[route]}, row {name})"
            for route, name in listed.items()
            if route in world.routes and world.routes[route] not in _operation_ids(name)
        ),
    }
    assert not any(problems.values()), "\n".join(
        f"{what}: {', '.join(items)}" for what, items in problems.items() if items
    )


def _operation_ids(full_name: str) -> tuple[str, str]:
    """The operationIds the OpenAPI document may give an RPC: its name, or, when two services
    have a method of that name, `Service_Method`."""
    service, method = full_name.rsplit(".", 2)[1:]
    return method, f"{service}_{method}"


def _want(row: Public | Admin, caller: str) -> str:
    outcome = expected(row, caller)
    if outcome == SCOPE_MISSING and isinstance(row, Public):
        return f"{outcome} {row.scope.value}"
    if outcome == ROLE_REQUIRED and isinstance(row, Admin):
        return f"{outcome} {row.role.value}"
    return outcome


def _url(world: World, route: str, fresh: str = "") -> tuple[str, str]:
    verb, template = route.split(" ", 1)
    values = dict(world.path_values)
    if fresh:
        assert world.owner is not None
        values[fresh] = _endpoint(world.gateway, world.owner)
    unknown = sorted(set(re.findall(r"\{(\w+)\}", template)) - set(values))
    if unknown:
        pytest.fail(
            f"{route}: no existing resource for the path parameters {unknown}: add "
            "them to World.path_values"
        )
    return verb, re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def _request(
    method: MethodDescriptor, verb: str, url: str, request: Message | None = None
) -> Message:
    request = request or message_factory.GetMessageClass(method.input_type)()
    for rule_verb, template in http_bindings(method):
        fields = path_fields(template, url) if rule_verb == verb else None
        if fields is not None:
            for dotted, value in fields.items():
                set_field(request, dotted, value)
            return request
    pytest.fail(f"{verb} {url} matches no google.api.http binding of {method.full_name}")


def _last_audit(gateway: RunningGateway) -> tuple[str, str, str, str | None]:
    with gateway.server.store.sessions() as session:
        row = session.scalars(select(AdminAudit).order_by(AdminAudit.seq.desc()).limit(1)).one()
        return row.operator_id, row.action, row.outcome, row.reason


@pytest.mark.parametrize("full_name", sorted(EXPECTED))
def test_every_caller_gets_the_expected_outcome(world: World, full_name: str) -> None:
    method = world.methods.get(full_name)
    if method is None:
        pytest.fail(f"EXPECTED has a row for {full_name}, which the gateway does not serve")
    row = EXPECTED[full_name]
    routes = [_url(world, route) for route in row.routes]
    problems: list[str] = []
    fresh = FRESH_PATH_VALUES.get(full_name, "")
    for caller in CALLERS:
        if fresh:
            routes = [_url(world, route, fresh) for route in row.routes]
        want = _want(row, caller)
        token = world.token(row, caller)
        seen: dict[str, Seen] = {}
        # gRPC, with the request the first route transcodes to.
        verb, url = routes[0] if routes else ("", "")
        request = (
            _request(method, verb, url)
            if routes
            else (message_factory.GetMessageClass(method.input_type)())
        )
        body: dict[str, Any] | None = None
        headers: dict[str, str] = {}
        if full_name in REQUEST_BODIES:
            request, body, headers = REQUEST_BODIES[full_name]()
            if routes:
                request = _request(method, verb, url, request)
        seen["gRPC"] = grpc_seen = call_grpc(world, method, request, token)
        if grpc_seen.outcome.startswith(ROLE_REQUIRED):
            audit = _last_audit(world.gateway)
            wanted = (world.operator_ids[caller], method.name, "DENIED", ROLE_REQUIRED)
            if audit != wanted:
                problems.append(f"{caller}: the ROLE_REQUIRED denial was not audited: {audit}")
        for route, at in zip(row.routes, routes, strict=True):
            verb, url = _url(world, route, fresh) if fresh else at
            if full_name in REQUEST_BODIES:
                _, body, headers = REQUEST_BODIES[full_name]()
            auth = {} if token is None else {"Authorization": f"Bearer {token}"}
            status, rest_seen = call_rest(world, verb, url, body, {**headers, **auth})
            seen[route] = rest_seen
            if status != HTTP_STATUS[grpc_seen.code]:
                problems.append(
                    f"{caller}: {route} answered HTTP {status}, gRPC {grpc_seen.code.name} "
                    f"(HTTP {HTTP_STATUS[grpc_seen.code]})"
                )
        for where, one in seen.items():
            text = " ".join(one.text.split())[:300]
            if one.outcome != want:
                problems.append(f"{caller}: {where} got {one.outcome}, expected {want}: {text}")
            shown = world.secret in one.text.lower()
            if caller not in (WITH_SCOPE, LACKING_SCOPE) and shown:
                problems.append(f"{caller}: {where} showed partner A's withdrawal: {text}")
            if isinstance(row, Public) and row.owns == "batch" and one.outcome == ALLOWED:
                batch_id = world.path_values["batch"]
                if caller == WITH_SCOPE and batch_id not in one.text:
                    problems.append(f"{caller}: {where} did not answer partner A's batch: {text}")
            if isinstance(row, Public) and row.owns == "trail" and one.outcome == ALLOWED:
                withdrawal_id = world.path_values["withdrawal"]
                if caller == WITH_SCOPE and f"{withdrawal_id}/stateChanges/1" not in one.text:
                    problems.append(f"{caller}: {where} did not list A's state changes: {text}")
            owned = isinstance(row, Public) and row.owns == "resource"
            if caller == WITH_SCOPE and owned and one.outcome == ALLOWED and not shown:
                problems.append(f"{caller}: {where} did not answer partner A's withdrawal: {text}")
    assert not problems, f"{full_name}:\n" + "\n".join(problems)
