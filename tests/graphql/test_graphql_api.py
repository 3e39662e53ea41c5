"""POST /graphql and its subscription on a real gateway (MariaDB, Redis): every field goes
through the gRPC API's dispatcher, so its answers and errors are the gRPC API's.

One gateway for the module; partners and withdrawals of their own per test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import httpx
import pytest

from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address, rich_error
from withdrawal_shared.scopes import Scope

WITHDRAWAL_FIELDS = """
  name clientReference chain token recipientAddress amount priority state stateReason
  stateMessage transactionHash blockNumber fee feeCurrency confirmations createTime
  updateTime endTime version userRef batch
"""
CREATE = f"""
mutation Create($input: CreateWithdrawalInput!, $requestId: String!) {{
  createWithdrawal(input: $input, requestId: $requestId) {{ {WITHDRAWAL_FIELDS} }}
}}
"""
GET = f"""
query Get($name: String!) {{
  withdrawal(name: $name) {{
    {WITHDRAWAL_FIELDS}
    stateChanges {{ edges {{ cursor node {{ name version fromState toState reason occurTime }} }}
                   pageInfo {{ endCursor hasNextPage }} }}
  }}
}}
"""
LIST = """
query List($filter: WithdrawalFilter, $first: Int, $after: String) {
  withdrawals(filter: $filter, first: $first, after: $after) {
    edges { cursor node { name userRef state
            stateChanges(first: 5) { edges { node { toState } } } } }
    pageInfo { endCursor hasNextPage }
  }
}
"""
CANCEL = """
mutation Cancel($name: String!, $reason: String) {
  cancelWithdrawal(name: $name, reason: $reason) { name state stateReason version }
}
"""


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, module_redis_prefix: str
) -> Iterator[RunningGateway]:
    with database("mariadb", tmp_path_factory.mktemp("db")) as url:
        settings = GatewaySettings(
            database_url=url,
            redis_url=redis_url,
            redis_prefix=module_redis_prefix,
            grpc_port=0,
            http_port=0,
            watch_poll_seconds=0.2,
            shutdown_grace_seconds=1.0,
            webhooks_allow_http_loopback=True,
        )
        running = RunningGateway(settings)
        yield running
        running.close()


def _partner(gateway: RunningGateway, *scopes: Scope) -> Partner:
    return gateway.add_partner(f"gql-{secrets.token_hex(3)}", scopes or tuple(Scope))


@pytest.fixture(scope="module")
def owner(gateway: RunningGateway) -> Partner:
    return _partner(gateway)


def gql(
    gateway: RunningGateway,
    query: str,
    variables: dict[str, Any] | None = None,
    partner: Partner | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={**(partner.headers if partner else {}), **(headers or {})},
        timeout=20,
    )


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def only_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert "Traceback" not in json.dumps(body)
    return error


def _input(**overrides: Any) -> dict[str, Any]:
    return {"token": "USDC", "recipientAddress": fresh_address(), "amount": "1.5", **overrides}


def create(gateway: RunningGateway, partner: Partner, **overrides: Any) -> dict[str, Any]:
    variables = {"input": _input(**overrides), "requestId": str(uuid.uuid4())}
    created: dict[str, Any] = ok(gql(gateway, CREATE, variables, partner))["createWithdrawal"]
    return created


# ---------------------------------------------------------------- mutations and queries


def test_create_is_idempotent_on_request_id(gateway: RunningGateway, owner: Partner) -> None:
    variables = {"input": _input(clientReference=f"inv-{uuid.uuid4()}"), "requestId": "gql-1"}
    variables["requestId"] = f"gql-{uuid.uuid4()}"
    first = ok(gql(gateway, CREATE, variables, owner))["createWithdrawal"]
    assert first["state"] == "STATE_RECEIVED" and first["version"] == 1
    assert first["transactionHash"] is None and first["blockNumber"] is None
    again = ok(gql(gateway, CREATE, variables, owner))["createWithdrawal"]
    assert again == first

    other = {**variables, "input": {**variables["input"], "amount": "2"}}
    response = gql(gateway, CREATE, other, owner)
    assert response.status_code == 200
    assert response.json()["data"] == {"createWithdrawal": None}
    error = only_error(response)
    assert error["path"] == ["createWithdrawal"]
    assert error["extensions"]["code"] == "ALREADY_EXISTS"
    assert error["extensions"]["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert error["extensions"]["traceId"] == response.headers["x-trace-id"]

    # The same request over gRPC: the same reason.
    request = create_request(amount="2", request_id=variables["requestId"])
    with pytest.raises(grpc.RpcError) as raised:
        gateway.stub.CreateWithdrawal(request, metadata=owner.metadata)
    assert rich_error(raised.value)[1].reason == "IDEMPOTENCY_KEY_REUSED"


def test_get_matches_grpc_and_nests_the_audit_trail(
    gateway: RunningGateway, owner: Partner
) -> None:
    created = create(gateway, owner, userRef="user-7", clientReference=f"r-{uuid.uuid4()}")
    got = ok(gql(gateway, GET, {"name": created["name"]}, owner))["withdrawal"]
    grpc_got = gateway.stub.GetWithdrawal(
        withdrawal_pb2.GetWithdrawalRequest(name=created["name"]), metadata=owner.metadata
    )
    assert got["name"] == grpc_got.name
    assert got["recipientAddress"] == grpc_got.recipient_address
    assert got["amount"] == grpc_got.amount == "1.5"
    assert got["userRef"] == "user-7"
    assert got["priority"] == withdrawal_pb2.Priority.Name(grpc_got.priority)
    assert got["feeCurrency"] is None and got["batch"] is None
    changes = got["stateChanges"]
    assert [e["node"]["toState"] for e in changes["edges"]] == ["STATE_RECEIVED"]
    assert changes["edges"][0]["node"]["fromState"] == "STATE_UNSPECIFIED"
    assert changes["edges"][0]["node"]["version"] == 1
    assert changes["pageInfo"] == {"endCursor": None, "hasNextPage": False}


def test_list_pages_through_a_filter(gateway: RunningGateway, owner: Partner) -> None:
    user = f"u-{secrets.token_hex(4)}"
    names = [create(gateway, owner, userRef=user)["name"] for _ in range(3)]
    create(gateway, owner, userRef="someone-else")
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        variables = {"filter": {"userRef": user}, "first": 2, "after": after}
        page = ok(gql(gateway, LIST, variables, owner))["withdrawals"]
        pages += 1
        seen += [e["node"]["name"] for e in page["edges"]]
        assert all(e["node"]["userRef"] == user for e in page["edges"])
        assert all(
            e["node"]["stateChanges"]["edges"][0]["node"]["toState"] == "STATE_RECEIVED"
            for e in page["edges"]
        )
        info = page["pageInfo"]
        if not info["hasNextPage"]:
            assert info["endCursor"] is None
            break
        assert page["edges"][-1]["cursor"] == info["endCursor"]
        assert page["edges"][0]["cursor"] is None
        after = info["endCursor"]
    assert pages == 2
    assert seen == list(reversed(names))  # newest first, as ListWithdrawals

    grpc_page = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(filter=f'user_ref = "{user}"', page_size=10),
        metadata=owner.metadata,
    )
    assert [w.name for w in grpc_page.withdrawals] == seen

    by_state = {"filter": {"userRef": user, "states": ["STATE_CANCELLED"]}}
    assert ok(gql(gateway, LIST, by_state, owner))["withdrawals"]["edges"] == []


def test_cancel_and_its_trail(gateway: RunningGateway, owner: Partner) -> None:
    name = create(gateway, owner)["name"]
    cancelled = ok(gql(gateway, CANCEL, {"name": name, "reason": "user asked"}, owner))
    assert cancelled["cancelWithdrawal"]["state"] == "STATE_CANCELLED"
    again = ok(gql(gateway, CANCEL, {"name": name}, owner))["cancelWithdrawal"]
    assert again == cancelled["cancelWithdrawal"]  # unchanged, as the API answers
    trail = ok(gql(gateway, GET, {"name": name}, owner))["withdrawal"]["stateChanges"]
    assert [e["node"]["toState"] for e in trail["edges"]] == ["STATE_RECEIVED", "STATE_CANCELLED"]


def test_invalid_input_is_the_grpc_error_with_graphql_field_names(
    gateway: RunningGateway, owner: Partner
) -> None:
    variables = {"input": _input(amount="12.5.3", recipientAddress="0x12"), "requestId": "k-1"}
    response = gql(gateway, CREATE, variables, owner)
    assert response.status_code == 200
    error = only_error(response)
    extensions = error["extensions"]
    assert extensions["code"] == "INVALID_ARGUMENT"
    fields = {v["field"] for v in extensions["fieldViolations"]}
    assert fields == {"input.amount", "input.recipientAddress"}
    request = create_request(amount="12.5.3", recipient="0x12", request_id="k-1")
    with pytest.raises(grpc.RpcError) as raised:
        gateway.stub.CreateWithdrawal(request, metadata=owner.metadata)
    code, info, grpc_fields = rich_error(raised.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert extensions["reason"] == info.reason
    assert set(grpc_fields) == {"withdrawal.amount", "withdrawal.recipient_address"}

    # A page size the API refuses names `first`.
    bad_page = gql(gateway, LIST, {"first": -1}, owner)
    page_error = only_error(bad_page)
    assert page_error["extensions"]["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in page_error["extensions"]["fieldViolations"]] == ["first"]

    # A document that does not validate: INVALID_ARGUMENT about `query`, never a 5xx.
    wrong = gql(gateway, "{ withdrawal(name: 5) { nope } }", None, owner)
    assert wrong.status_code == 200
    for err in wrong.json()["errors"]:
        assert err["extensions"]["code"] == "INVALID_ARGUMENT"
        assert err["extensions"]["fieldViolations"][0]["field"] == "query"
    garbage = httpx.post(
        f"{gateway.base_url}/graphql",
        content=b"{not json",
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert garbage.status_code == 400
    assert garbage.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


def test_batch_rows_batches_and_webhook_endpoints(gateway: RunningGateway, owner: Partner) -> None:
    csv = f"recipient_address,amount,token,client_reference\r\n{fresh_address()},1,USDC,a\r\n"
    csv += f"{fresh_address()},2,USDC,b\r\n"
    uploaded = httpx.post(
        f"{gateway.base_url}/v1/batches",
        content=csv.encode(),
        headers={**owner.headers, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "text/csv"},
    ).json()
    query = """
    query($name: String!) {
      batch(name: $name) { name state rowCount acceptedCount
        tokenTotals { token amount count }
        rows(first: 1) { edges { cursor node { line clientReference withdrawal state } }
                         pageInfo { endCursor hasNextPage } } }
      batches(first: 1) { edges { node { name } } }
    }"""
    data = ok(gql(gateway, query, {"name": uploaded["name"]}, owner))
    batch = data["batch"]
    assert batch["rowCount"] == 2 and batch["acceptedCount"] == 2
    assert batch["tokenTotals"] == [{"token": "USDC", "amount": "3", "count": 2}]
    rows = batch["rows"]
    assert rows["edges"][0]["node"]["line"] == 2
    assert rows["edges"][0]["node"]["withdrawal"].startswith("withdrawals/")
    assert rows["pageInfo"]["hasNextPage"] is True
    assert data["batches"]["edges"][0]["node"]["name"] == uploaded["name"]

    webhooks_pb2_grpc.WebhookServiceStub(gateway.channel).CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(url="http://127.0.0.1:9/hook")
        ),
        metadata=owner.metadata,
    )
    endpoints = ok(
        gql(gateway, "{ webhookEndpoints { edges { node { name url state } } } }", None, owner)
    )["webhookEndpoints"]["edges"]
    assert [e["node"]["url"] for e in endpoints] == ["http://127.0.0.1:9/hook"]
    assert endpoints[0]["node"]["state"] == "ENDPOINT_STATE_ENABLED"


# ---------------------------------------------------------------- who may call


def test_auth_matrix(
    gateway: RunningGateway, owner: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name = create(gateway, owner)["name"]

    # No key: refused up front, HTTP 401, one UNAUTHENTICATED error.
    response = gql(gateway, GET, {"name": name})
    assert response.status_code == 401
    assert only_error(response)["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()
    dead = gql(gateway, GET, {"name": name}, headers={"Authorization": "Bearer awk_0badc0de_0"})
    assert dead.status_code == 401
    assert only_error(dead)["extensions"]["reason"] == "UNAUTHENTICATED"

    # A key without withdrawals:read: the scope error, as on gRPC.
    writer = Partner(owner.id, _partner_key(gateway, owner.id, Scope.WITHDRAWALS_CREATE))
    denied = gql(gateway, GET, {"name": name}, writer)
    assert denied.status_code == 200
    error = only_error(denied)
    assert error["extensions"]["code"] == "PERMISSION_DENIED"
    assert error["extensions"]["reason"] == "SCOPE_MISSING"
    assert error["extensions"]["metadata"]["scope"] == "withdrawals:read"
    with pytest.raises(grpc.RpcError) as raised:
        gateway.stub.GetWithdrawal(
            withdrawal_pb2.GetWithdrawalRequest(name=name), metadata=writer.metadata
        )
    assert rich_error(raised.value)[1].reason == "SCOPE_MISSING"
    no_webhooks = gql(gateway, "{ webhookEndpoints { edges { cursor } } }", None, writer)
    assert only_error(no_webhooks)["extensions"]["metadata"]["scope"] == "webhooks:manage"

    # Another partner: NOT_FOUND, its data never shown; its own list holds none of ours.
    stranger = _partner(gateway)
    for query in (GET, CANCEL):
        hidden = gql(gateway, query, {"name": name}, stranger)
        assert hidden.status_code == 200
        error = only_error(hidden)
        assert error["extensions"]["code"] == "NOT_FOUND"
    theirs = ok(gql(gateway, LIST, {}, stranger))["withdrawals"]["edges"]
    assert theirs == []

    logged = "\n".join(str(vars(r)) for r in caplog.records)
    assert "graphql request" in logged
    for partner in (owner, writer, stranger):
        assert partner.api_key not in logged


def _partner_key(gateway: RunningGateway, partner_id: str, *scopes: Scope) -> str:
    from withdrawal_shared.db.api_keys import create_api_key

    with gateway.server.store.sessions.begin() as session:
        return create_api_key(session, partner_id, set(scopes)).token


# ---------------------------------------------------------------- limits


def test_limits_refuse_before_any_call(gateway: RunningGateway, owner: Partner) -> None:
    costly = """
    query($n: Int) { withdrawals(first: $n) { edges { node {
        stateChanges(first: 50) { edges { node { version } } } } } } }"""
    response = gql(gateway, costly, {"n": 100}, owner)
    assert response.status_code == 200
    body = response.json()
    assert body.get("data") is None
    error = only_error(response)
    assert error["extensions"]["code"] == "INVALID_ARGUMENT"
    assert error["extensions"]["fieldViolations"][0]["field"] == "query"
    assert "over the limit of 2000" in error["message"]
    assert ok(gql(gateway, costly, {"n": 5}, owner))["withdrawals"] is not None

    deep = (
        "{ withdrawals { edges { node { stateChanges { edges { node "
        "{ name { a { b { c } } } } } } } } } }"
    )
    refused = gql(gateway, deep, None, owner).json()
    messages = [e["message"] for e in refused["errors"]]
    assert any("exceeds maximum operation depth of 8" in m for m in messages), messages
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"INVALID_ARGUMENT"}

    long = "{" + " __typename" * 2100 + " }"
    too_long = only_error(gql(gateway, long, None, owner))
    assert too_long["extensions"]["fieldViolations"][0]["field"] == "query"
    assert "more than 2000 tokens" in too_long["message"], too_long["message"]

    many = httpx.post(
        f"{gateway.base_url}/graphql",
        json=[{"query": "{ withdrawals { pageInfo { hasNextPage } } }"}] * 2,
        headers=owner.headers,
    )
    assert many.status_code == 400
    assert many.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    by_post = gql(gateway, SUBSCRIBE, {"name": "withdrawals/x"}, owner)
    assert by_post.status_code == 400
    assert by_post.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    get = httpx.get(f"{gateway.base_url}/graphql", headers=owner.headers)
    assert get.status_code == 405 and get.headers["allow"] == "POST"


# ---------------------------------------------------------------- subscription

SUBSCRIBE = """
subscription($name: String!) {
  withdrawalStatus(name: $name) { eventType previousState withdrawal { name state version } }
}"""


async def _watch(
    url: str, init: dict[str, Any], name: str, on_first: Any, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("graphql-transport-ws",), headers=headers or {}) as ws,
    ):
        await ws.send_json({"type": "connection_init", "payload": init})
        ack = await ws.receive(timeout=10)
        if ack.type != aiohttp.WSMsgType.TEXT:
            return events, f"closed {ws.close_code}"
        assert json.loads(ack.data)["type"] == "connection_ack"
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIBE, "variables": {"name": name}},
            }
        )
        while True:
            message = await ws.receive(timeout=20)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            payload = json.loads(message.data)
            if payload["type"] == "complete":
                return events, "complete"
            if payload["type"] == "error":
                return [payload], "error"
            assert payload["type"] == "next", payload
            events.append(payload["payload"])
            if len(events) == 1:
                await asyncio.get_running_loop().run_in_executor(None, on_first)


def test_subscription_streams_until_terminal(gateway: RunningGateway, owner: Partner) -> None:
    name = create(gateway, owner)["name"]
    url = f"{gateway.base_url.replace('http', 'ws')}/graphql"

    def cancel() -> None:
        gateway.stub.CancelWithdrawal(
            withdrawal_pb2.CancelWithdrawalRequest(name=name), metadata=owner.metadata
        )

    events, end = asyncio.run(
        _watch(url, {"authorization": f"Bearer {owner.api_key}"}, name, cancel)
    )
    assert end == "complete"
    data = [e["data"]["withdrawalStatus"] for e in events]
    assert data[0]["eventType"] == "EVENT_TYPE_SNAPSHOT"
    assert data[0]["withdrawal"]["state"] == "STATE_RECEIVED"
    assert data[-1]["eventType"] == "EVENT_TYPE_STATE_CHANGED"
    assert data[-1]["withdrawal"]["state"] == "STATE_CANCELLED"
    assert data[-1]["previousState"] == "STATE_RECEIVED"

    # The upgrade request's header authenticates as well; another partner's is NOT_FOUND.
    stranger = _partner(gateway)
    errors, end = asyncio.run(_watch(url, {}, name, lambda: None, headers=stranger.headers))
    assert end == "complete"  # one `next` holding the error, then `complete`
    assert errors[0]["data"] is None
    assert errors[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # No key: the socket is closed with 4403 before any subscription.
    _, end = asyncio.run(_watch(url, {}, name, lambda: None))
    assert end == "closed 4403"


# ---------------------------------------------------------------- every root field

R, C, M = Scope.WITHDRAWALS_READ, Scope.WITHDRAWALS_CREATE, Scope.WEBHOOKS_MANAGE
ROOT_FIELDS: dict[str, tuple[Scope, str, bool]] = {
    "withdrawal": (R, '{ withdrawal(name: "$W") { name } }', True),
    "withdrawals": (R, "{ withdrawals { pageInfo { hasNextPage } } }", False),
    "batch": (R, '{ batch(name: "$B") { name rows { pageInfo { hasNextPage } } } }', True),
    "batches": (R, "{ batches { pageInfo { hasNextPage } } }", False),
    "webhookEndpoints": (M, "{ webhookEndpoints { pageInfo { hasNextPage } } }", False),
    "createWithdrawal": (
        C,
        'mutation { createWithdrawal(requestId: "$K", input: {token: "USDC", '
        'recipientAddress: "$A", amount: "1"}) { name } }',
        False,
    ),
    "cancelWithdrawal": (C, 'mutation { cancelWithdrawal(name: "$W") { name } }', True),
    "withdrawalStatus": (R, "", True),  # over the WebSocket: test_subscription_*
}
"""Root field -> (the scope its RPC needs, a request, whether it acts on one partner's
resource). A root field without a row fails the test."""


def test_every_root_field_checks_scope_and_tenant(gateway: RunningGateway, owner: Partner) -> None:
    from svc_gateway.graphql.schema import schema

    roots = schema._schema
    served = {
        name
        for kind in (roots.query_type, roots.mutation_type, roots.subscription_type)
        if kind is not None
        for name in kind.fields
    }
    assert served == set(ROOT_FIELDS)

    withdrawal = create(gateway, owner)["name"]
    csv = f"recipient_address,amount,token\r\n{fresh_address()},1,USDC\r\n".encode()
    batch = httpx.post(
        f"{gateway.base_url}/v1/batches",
        content=csv,
        headers={**owner.headers, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "text/csv"},
    ).json()["name"]
    stranger = _partner(gateway)
    every = set(Scope)
    for field, (scope, template, owned) in ROOT_FIELDS.items():
        if not template:
            continue

        def query(template: str = template) -> str:
            return (
                template.replace("$W", withdrawal)
                .replace("$B", batch)
                .replace("$K", str(uuid.uuid4()))
                .replace("$A", fresh_address())
            )

        assert gql(gateway, query()).status_code == 401, field
        lacking = Partner(owner.id, _partner_key(gateway, owner.id, *(every - {scope})))
        error = only_error(gql(gateway, query(), None, lacking))
        assert error["extensions"]["reason"] == "SCOPE_MISSING", (field, error)
        assert error["extensions"]["metadata"]["scope"] == scope.value, field
        allowed = gql(gateway, query(), None, owner).json()
        assert "errors" not in allowed, (field, allowed)
        theirs = gql(gateway, query(), None, stranger).json()
        if owned:
            assert only_error_of(theirs)["extensions"]["code"] == "NOT_FOUND", field
            assert withdrawal.split("/")[1] not in json.dumps(theirs.get("data")), field
        else:
            assert "errors" not in theirs, (field, theirs)


def only_error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error
