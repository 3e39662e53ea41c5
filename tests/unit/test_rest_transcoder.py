"""The REST transcoder against the real WithdrawalService descriptors, with fake invokers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.rest import RestBinding, build_rest_app
from svc_gateway.rest.http_rule import TemplateError, parse_template, rule_bindings
from withdrawal_shared import logs
from withdrawal_shared.errors import ERROR_DOMAIN, FieldViolation, invalid_argument, not_found

SERVICE: ServiceDescriptor = withdrawal_pb2.DESCRIPTOR.services_by_name["WithdrawalService"]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

Handler = Callable[[Message, Mapping[str, str]], Awaitable[Message]]
StreamHandler = Callable[[Message, Mapping[str, str]], AsyncIterator[Message]]


class FakeBackend:
    """Records every call; answers with per-method handlers or a default withdrawal."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Message, dict[str, str]]] = []
        self.unary: dict[str, Handler] = {}
        self.stream: dict[str, StreamHandler] = {}

    async def invoke(
        self, method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        self.calls.append((method.name, request, dict(metadata)))
        handler = self.unary.get(method.name)
        if handler is not None:
            return await handler(request, metadata)
        if method.name == "ListWithdrawals":
            return withdrawal_pb2.ListWithdrawalsResponse()
        return withdrawal_pb2.Withdrawal(
            name="withdrawals/w1", state=withdrawal_pb2.STATE_RECEIVED, version=3
        )

    def invoke_stream(
        self, method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> AsyncIterator[Message]:
        self.calls.append((method.name, request, dict(metadata)))
        return self.stream[method.name](request, metadata)

    @property
    def last(self) -> tuple[str, Message, dict[str, str]]:
        return self.calls[-1]


def run(
    backend: FakeBackend,
    scenario: Callable[[TestClient[Any, Any]], Awaitable[None]],
    **options: Any,
) -> None:
    """Serve the app on 127.0.0.1 (random port) and run `scenario` against it."""
    app = build_rest_app(
        [RestBinding(SERVICE, backend.invoke, backend.invoke_stream)],
        openapi={"openapi": "3.0.3"},
        **options,
    )

    async def main() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await scenario(client)

    asyncio.run(main())


def violations(body: dict[str, Any]) -> dict[str, str]:
    for detail in body["error"]["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            return {v["field"]: v["description"] for v in detail["fieldViolations"]}
    return {}


def reason(body: dict[str, Any]) -> str:
    for detail in body["error"]["details"]:
        if detail["@type"].endswith("google.rpc.ErrorInfo"):
            return str(detail["reason"])
    return ""


# ---------------------------------------------------------------- templates


def test_template_with_verb_and_slash_variable() -> None:
    t = parse_template("/v1/{name=withdrawals/*}:cancel")
    assert t.verb == "cancel"
    assert t.match("/v1/withdrawals/abc:cancel") == {"name": "withdrawals/abc"}
    assert t.match("/v1/withdrawals/abc") is None
    assert t.match("/v1/withdrawals/abc:watch") is None
    assert t.match("/v1/withdrawals/a/b:cancel") is None
    assert t.match("/v1/withdrawals/a%20b:cancel") == {"name": "withdrawals/a b"}


def test_template_forms() -> None:
    assert parse_template("/v1/withdrawals").match("/v1/withdrawals") == {}
    assert parse_template("/v1/withdrawals").match("/v1/withdrawals/x") is None
    assert parse_template("/v1/{name}").match("/v1/x%2Fy") == {"name": "x/y"}
    assert parse_template("/v1/{name}").match("/v1/x/y") is None
    deep = parse_template("/v1/{name=shelves/*/books/**}")
    assert deep.match("/v1/shelves/1/books/a/b") == {"name": "shelves/1/books/a/b"}
    assert parse_template("/v1/*/x").match("/v1/anything/x") == {}
    nested = parse_template("/v1/{withdrawal.name=withdrawals/*}")
    assert nested.match("/v1/withdrawals/q") == {"withdrawal.name": "withdrawals/q"}
    # Without a verb in the template, a ':' is part of the last variable.
    assert parse_template("/v1/{name=withdrawals/*}").match("/v1/withdrawals/a:b") == {
        "name": "withdrawals/a:b"
    }


@pytest.mark.parametrize(
    "bad", ["v1/x", "/v1/{name", "/v1/**/x", "/v1/{a=**/b}", "/v1/{a}/{a}", "/v1/x:", "/v1//x"]
)
def test_bad_templates(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_rule_bindings_include_additional_bindings() -> None:
    rule = http_pb2.HttpRule(get="/v1/{name=withdrawals/*}")
    rule.additional_bindings.add(post="/v1/{name=withdrawals/*}:get", body="*")
    found = [(b.http_method, b.template.template, b.body) for b in rule_bindings(rule)]
    assert found == [
        ("GET", "/v1/{name=withdrawals/*}", ""),
        ("POST", "/v1/{name=withdrawals/*}:get", "*"),
    ]


# ---------------------------------------------------------------- requests and responses


def test_create_maps_body_field_header_and_metadata() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/v1/withdrawals",
            json={"token": "USDC", "recipient_address": "0xabc", "amount": "12.5"},
            headers={
                "Authorization": "Bearer k_1",
                "Idempotency-Key": "req-1",
                "traceparent": TRACEPARENT,
            },
        )
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        assert resp.headers["x-trace-id"] == TRACE_ID
        body = await resp.json()
        # Fields without presence are printed, in lowerCamelCase; int64 as a string.
        assert body["state"] == "STATE_RECEIVED"
        assert body["stateReason"] == ""
        assert body["confirmations"] == 0
        assert body["version"] == "3"

    run(backend, scenario)
    name, request, metadata = backend.last
    assert name == "CreateWithdrawal"
    assert isinstance(request, withdrawal_pb2.CreateWithdrawalRequest)
    assert request.request_id == "req-1"
    assert request.withdrawal.token == "USDC"
    assert request.withdrawal.recipient_address == "0xabc"
    assert metadata["authorization"] == "Bearer k_1"
    assert metadata["traceparent"] == TRACEPARENT
    assert "host" not in metadata


def test_idempotency_key_and_query_request_id() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/v1/withdrawals?request_id=a", json={}, headers={"Idempotency-Key": "b"}
        )
        assert resp.status == 400
        body = await resp.json()
        assert violations(body) == {
            "request_id": "differs from the Idempotency-Key header; give one or make them equal"
        }
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        resp = await client.post(
            "/v1/withdrawals?requestId=same", json={}, headers={"Idempotency-Key": "same"}
        )
        assert resp.status == 200
        resp = await client.post("/v1/withdrawals?request_id=q", json={})
        assert resp.status == 200

    run(backend, scenario)
    assert [c[1].request_id for c in backend.calls] == ["same", "q"]  # type: ignore[attr-defined]


def test_get_binds_slash_containing_name() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1/withdrawals/w%201")
        assert resp.status == 200

    run(backend, scenario)
    assert backend.last[0] == "GetWithdrawal"
    assert backend.last[1].name == "withdrawals/w 1"  # type: ignore[attr-defined]


def test_cancel_body_star_and_verb_routing() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/withdrawals/w1:cancel", json={"reason": "dup"})
        assert resp.status == 200
        resp = await client.post("/v1/withdrawals/w2:cancel")  # no body at all
        assert resp.status == 200
        # The path wins only when the body agrees.
        resp = await client.post("/v1/withdrawals/w3:cancel", json={"name": "withdrawals/x"})
        assert resp.status == 400
        assert "name" in violations(await resp.json())
        resp = await client.post("/v1/withdrawals/w3:cancel", json={"name": "withdrawals/w3"})
        assert resp.status == 200
        # Body "*" leaves no field for the query string.
        resp = await client.post("/v1/withdrawals/w1:cancel?reason=x", json={})
        assert resp.status == 400
        assert "reason" in violations(await resp.json())

    run(backend, scenario)
    requests = [c[1] for c in backend.calls]
    assert [(r.name, r.reason) for r in requests] == [  # type: ignore[attr-defined]
        ("withdrawals/w1", "dup"),
        ("withdrawals/w2", ""),
        ("withdrawals/w3", ""),
    ]
    assert {c[0] for c in backend.calls} == {"CancelWithdrawal"}


def test_list_query_parameters() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get(
            "/v1/withdrawals", params={"page_size": "20", "filter": "state = QUEUED"}
        )
        assert resp.status == 200
        assert await resp.json() == {"withdrawals": [], "nextPageToken": ""}
        resp = await client.get("/v1/withdrawals?pageSize=7&pageToken=t")
        assert resp.status == 200
        resp = await client.get("/v1/withdrawals?page_size=ten")
        assert resp.status == 400
        found = violations(await resp.json())
        assert list(found) == ["page_size"]
        assert "integer" in found["page_size"]
        resp = await client.get("/v1/withdrawals?page_size=99999999999")
        assert resp.status == 400
        resp = await client.get("/v1/withdrawals?page_size=1&page_size=2")
        assert "page_size" in violations(await resp.json())
        resp = await client.get("/v1/withdrawals?colour=red")
        assert resp.status == 400
        assert "colour" in violations(await resp.json())

    run(backend, scenario)
    requests = [c[1] for c in backend.calls]
    assert len(requests) == 2
    assert requests[0].page_size == 20  # type: ignore[attr-defined]
    assert requests[0].filter == "state = QUEUED"  # type: ignore[attr-defined]
    assert requests[1].page_size == 7  # type: ignore[attr-defined]
    assert requests[1].page_token == "t"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "data", "field", "words"),
    [
        ("/v1/withdrawals", b"{not json", "body", "is not valid JSON: Expecting property name"),
        ("/v1/withdrawals/w:cancel", b"{not json", "body", "is not valid JSON"),
        ("/v1/withdrawals", b"\xff\xfe{}", "body", "is not UTF-8 encoded JSON"),
        ("/v1/withdrawals", b"[1, 2]", "body", "must be a JSON object"),
        ("/v1/withdrawals/w:cancel", b'"text"', "body", "must be a JSON object"),
        ("/v1/withdrawals", b'{"amount": 1' + b"0" * 5000 + b"}", "body", "a number is too long"),
        (
            "/v1/withdrawals",
            b'{"colour": "red"}',
            "colour",
            "is not a known field; the fields are: name, clientReference, chain, token,",
        ),
        (
            "/v1/withdrawals",
            b'{"amount": 12.5}',
            "amount",
            'must be a decimal string such as "12.5", not a number',
        ),
        ("/v1/withdrawals", b'{"amount": 12}', "amount", 'decimal string such as "12.5"'),
        (
            "/v1/withdrawals",
            b'{"recipient_address": 5}',
            "recipient_address",
            "must be a string of 0x and 40 hexadecimal digits",
        ),
        (
            "/v1/withdrawals",
            b'{"priority": "FAST"}',
            "priority",
            "must be one of PRIORITY_UNSPECIFIED, PRIORITY_STANDARD, PRIORITY_PRIORITY, "
            'PRIORITY_EMERGENCY; got "FAST"',
        ),
        ("/v1/withdrawals", b'{"priority": 9}', "priority", "must be one of PRIORITY_"),
        ("/v1/withdrawals", b'{"priority": true}', "priority", "got true"),
        (
            "/v1/withdrawals",
            b'{"clientReference": {"id": 1}}',
            "clientReference",
            "must be a string, not an object",
        ),
        ("/v1/withdrawals", b'{"token": ["USDC"]}', "token", "must be a string, not an array"),
        ("/v1/withdrawals", b'{"token": true}', "token", "must be a string, not a boolean"),
        (
            "/v1/withdrawals",
            b'{"confirmations": "x"}',
            "confirmations",
            'must be an integer from -2147483648 to 2147483647; got "x"',
        ),
        ("/v1/withdrawals", b'{"confirmations": 1.5}', "confirmations", "integer"),
        ("/v1/withdrawals", b'{"version": [1]}', "version", "must be an integer from"),
        ("/v1/withdrawals", b'{"version": "99999999999999999999"}', "version", "integer"),
        (
            "/v1/withdrawals",
            b'{"createTime": "yesterday"}',
            "createTime",
            'must be an RFC 3339 timestamp such as "2024-05-01T12:00:00Z"',
        ),
        ("/v1/withdrawals", b'{"createTime": 5}', "createTime", "RFC 3339 timestamp"),
        (
            "/v1/withdrawals",
            b'{"token": "USDC", "token": "USDT", "client_reference": "a", "clientReference": "b"}',
            "clientReference",
            "is given twice, as client_reference and as clientReference",
        ),
        ("/v1/withdrawals/w:cancel", b'{"reason": 5}', "reason", "must be a string, not a number"),
    ],
)
def test_bad_bodies_name_the_field(path: str, data: bytes, field: str, words: str) -> None:
    """Each known kind of bad body is a 400 naming the field as sent and what it takes."""
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(path, data=data, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["code"] == 400
        assert reason(body) == "INVALID_ARGUMENT"
        found = violations(body)
        assert field in found, found
        assert words in found[field]
        assert f"{field}: {found[field]}" in body["error"]["message"]
        for python in ("float", "dict", "'str'", "bytes-like", "int()", "recursion", "list'"):
            assert python not in json.dumps(body)

    run(backend, scenario)
    assert backend.calls == []


def test_several_bad_fields_are_named_at_once() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/v1/withdrawals", json={"amount": 1.5, "priority": "FAST", "extra": {"a": [1]}}
        )
        assert resp.status == 400
        assert set(violations(await resp.json())) == {"amount", "priority", "extra"}

    run(backend, scenario)
    assert backend.calls == []


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_json_is_400_before_decoding(opener: bytes) -> None:
    backend = FakeBackend()
    closer = b"]" if opener == b"[" else b"}"
    deep = b'{"clientReference":' + opener * 5000 + b"1" + closer * 5000 + b"}"

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/withdrawals", data=deep)
        assert resp.status == 400
        body = await resp.json()
        assert violations(body) == {"body": "nests objects and arrays more than 32 levels deep"}
        assert "recursion" not in json.dumps(body)
        # Brackets inside strings do not count, and 32 levels are fine.
        text = json.dumps({"clientReference": "[{" * 100})
        resp = await client.post("/v1/withdrawals", data=text.encode())
        assert resp.status == 200
        nested = b'{"clientReference":' + b"[" * 31 + b"]" * 31 + b"}"
        resp = await client.post("/v1/withdrawals", data=nested)
        assert violations(await resp.json()) == {
            "clientReference": "must be a string, not an array"
        }

    run(backend, scenario, max_body_bytes=65536)
    assert len(backend.calls) == 1


def test_null_and_valid_values_of_every_kind_pass() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/v1/withdrawals",
            json={
                "amount": "12.5",
                "priority": 2,
                "clientReference": None,
                "confirmations": "7",
                "version": 3.0,
                "createTime": "2024-05-01T12:00:00Z",
                "recipient_address": "0x" + "1" * 40,
            },
        )
        assert resp.status == 200, await resp.text()

    run(backend, scenario)
    request = backend.last[1]
    withdrawal = request.withdrawal  # type: ignore[attr-defined]
    assert withdrawal.amount == "12.5"
    assert withdrawal.priority == withdrawal_pb2.PRIORITY_PRIORITY
    assert (withdrawal.confirmations, withdrawal.version) == (7, 3)
    assert withdrawal.recipient_address == "0x" + "1" * 40


def test_body_on_get_is_rejected() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1/withdrawals", data=b'{"pageSize": 3}')
        assert resp.status == 400
        assert "body" in violations(await resp.json())

    run(backend, scenario)


def test_oversized_body_is_413_giving_the_limit() -> None:
    backend = FakeBackend()
    big = json.dumps({"clientReference": "x" * 2000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * 400

    def check(body: dict[str, Any]) -> None:
        assert body["error"]["code"] == 413
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert body["error"]["message"] == (
            "The request body is larger than the limit of 1024 bytes; send a smaller one."
        )
        assert reason(body) == "BODY_TOO_LARGE"
        info = body["error"]["details"][0]
        assert info["domain"] == ERROR_DOMAIN
        assert info["metadata"] == {"limit_bytes": "1024"}
        assert violations(body) == {"body": "is larger than 1024 bytes"}

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/withdrawals", data=big)
        assert resp.status == 413
        assert resp.content_type == "application/json"
        check(await resp.json())
        # Without Content-Length (chunked), the limit still holds.
        resp = await client.post("/v1/withdrawals/w:cancel", data=chunks())
        assert resp.status == 413
        check(await resp.json())
        resp = await client.get("/v1/withdrawals", data=big)
        assert resp.status == 413
        resp = await client.post("/v1/withdrawals", data=b'{"amount": "1"}')
        assert resp.status == 200

    run(backend, scenario, max_body_bytes=1024)
    assert len(backend.calls) == 1


# ---------------------------------------------------------------- errors


def test_api_error_passes_through_with_details() -> None:
    backend = FakeBackend()

    async def missing(request: Message, metadata: Mapping[str, str]) -> Message:
        raise not_found("withdrawals/nope")

    async def bad(request: Message, metadata: Mapping[str, str]) -> Message:
        raise invalid_argument([FieldViolation("withdrawal.amount", "must be positive")])

    backend.unary["GetWithdrawal"] = missing
    backend.unary["CreateWithdrawal"] = bad

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1/withdrawals/nope", headers={"traceparent": TRACEPARENT})
        assert resp.status == 404
        assert resp.headers["x-trace-id"] == TRACE_ID
        body = await resp.json()
        assert body["error"]["status"] == "NOT_FOUND"
        info = body["error"]["details"][0]
        assert info["reason"] == "NOT_FOUND"
        assert info["domain"] == ERROR_DOMAIN
        assert info["metadata"] == {"resource": "withdrawals/nope"}
        resp = await client.post("/v1/withdrawals", json={"amount": "-1"})
        assert resp.status == 400
        assert violations(await resp.json()) == {"amount": "must be positive"}

    run(backend, scenario)


def test_core_violations_use_the_names_the_rest_caller_used() -> None:
    """The core names proto fields (as gRPC shows them); REST renames them as sent."""
    backend = FakeBackend()
    core_fields = [
        "request_id",
        "withdrawal",
        "withdrawal.recipient_address",
        "withdrawal.client_reference",
        "withdrawal.amount",
    ]

    async def bad_create(request: Message, metadata: Mapping[str, str]) -> Message:
        raise invalid_argument([FieldViolation(f, "is wrong") for f in core_fields])

    async def bad_list(request: Message, metadata: Mapping[str, str]) -> Message:
        raise invalid_argument(
            [FieldViolation("page_size", "is wrong"), FieldViolation("page_token", "is wrong")]
        )

    backend.unary["CreateWithdrawal"] = bad_create
    backend.unary["ListWithdrawals"] = bad_list

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/v1/withdrawals",
            json={"client_reference": "x", "amount": "1"},
            headers={"Idempotency-Key": "k"},
        )
        body = await resp.json()
        assert list(violations(body)) == [
            "Idempotency-Key",
            "body",
            "recipientAddress",
            "client_reference",  # the caller sent the proto name
            "amount",
        ]
        assert body["error"]["message"] == (
            "The request has invalid fields (Idempotency-Key: is wrong; body: is wrong; "
            "recipientAddress: is wrong; client_reference: is wrong; amount: is wrong). "
            "Fix them and send it again."
        )
        # Without the header, request_id is still the header's, unless sent as a parameter.
        resp = await client.post("/v1/withdrawals", json={})
        assert "Idempotency-Key" in violations(await resp.json())
        resp = await client.post("/v1/withdrawals?requestId=q", json={})
        assert "requestId" in violations(await resp.json())
        resp = await client.get("/v1/withdrawals?pageSize=5")
        assert list(violations(await resp.json())) == ["pageSize", "pageToken"]
        resp = await client.get("/v1/withdrawals?page_size=5")
        assert list(violations(await resp.json())) == ["page_size", "pageToken"]

    run(backend, scenario)


def test_unexpected_exception_is_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend()
    seen_trace_ids: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen_trace_ids.append(logs.trace_id_var.get())

    async def boom(request: Message, metadata: Mapping[str, str]) -> Message:
        raise RuntimeError("database password is hunter2")

    backend.unary["GetWithdrawal"] = boom
    spy = Spy(level=logging.ERROR)
    # Every transport logs an unexpected exception through withdrawal_shared.unexpected.
    logging.getLogger("withdrawal_shared.unexpected").addHandler(spy)

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1/withdrawals/w1", headers={"traceparent": TRACEPARENT})
        assert resp.status == 500
        text = await resp.text()
        assert "Traceback" not in text
        assert "hunter2" not in text
        assert "RuntimeError" not in text
        body = json.loads(text)
        assert body["error"]["status"] == "INTERNAL"
        assert TRACE_ID in body["error"]["message"]
        assert resp.headers["x-trace-id"] == TRACE_ID

    try:
        with caplog.at_level(logging.ERROR, logger="withdrawal_shared.unexpected"):
            run(backend, scenario)
    finally:
        logging.getLogger("withdrawal_shared.unexpected").removeHandler(spy)
    assert seen_trace_ids == [TRACE_ID]
    assert any(r.exc_info for r in caplog.records)
    assert logs.trace_id_var.get() == ""


def test_unknown_path_and_wrong_method() -> None:
    backend = FakeBackend()

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v2/nothing")
        assert resp.status == 404
        body = await resp.json()
        assert reason(body) == "NOT_FOUND"
        assert resp.headers["x-trace-id"]
        resp = await client.delete("/v1/withdrawals/w1")
        assert resp.status == 405
        body = await resp.json()
        assert reason(body) == "METHOD_NOT_ALLOWED"
        assert body["error"]["code"] == 405
        assert resp.headers["Allow"] == "GET"
        resp = await client.get("/v1/withdrawals/w1:cancel")
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        resp = await client.post("/v1/withdrawals/w1:watch")
        assert resp.status == 405
        resp = await client.post("/openapi.json")
        assert resp.status == 405
        resp = await client.get("/openapi.json")
        assert await resp.json() == {"openapi": "3.0.3"}
        resp = await client.get("/healthz")
        assert await resp.json() == {"status": "SERVING"}

    run(backend, scenario)
    assert backend.calls == []


# ---------------------------------------------------------------- streaming


def _event(state: withdrawal_pb2.State.ValueType) -> withdrawal_pb2.WatchWithdrawalResponse:
    return withdrawal_pb2.WatchWithdrawalResponse(
        event_type=withdrawal_pb2.EVENT_TYPE_STATE_CHANGED,
        withdrawal=withdrawal_pb2.Withdrawal(name="withdrawals/w1", state=state),
    )


def test_watch_streams_ndjson_as_produced() -> None:
    backend = FakeBackend()
    release = asyncio.Event()
    closed: list[bool] = []

    async def watch(request: Message, metadata: Mapping[str, str]) -> AsyncIterator[Message]:
        try:
            yield _event(withdrawal_pb2.STATE_QUEUED)
            await release.wait()  # the first line must reach the client before this
            yield _event(withdrawal_pb2.STATE_SIGNED)
            yield _event(withdrawal_pb2.STATE_COMPLETED)
        finally:
            closed.append(True)

    backend.stream["WatchWithdrawal"] = watch

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1/withdrawals/w1:watch", headers={"traceparent": TRACEPARENT})
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        assert resp.headers["x-trace-id"] == TRACE_ID
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert first["withdrawal"]["state"] == "STATE_QUEUED"
        assert first["previousState"] == "STATE_UNSPECIFIED"
        release.set()
        rest = [json.loads(line) for line in (await resp.read()).splitlines()]
        assert [r["withdrawal"]["state"] for r in rest] == ["STATE_SIGNED", "STATE_COMPLETED"]

    run(backend, scenario)
    assert backend.last[1].name == "withdrawals/w1"  # type: ignore[attr-defined]
    assert closed == [True]


def test_watch_errors_before_and_after_the_first_message() -> None:
    backend = FakeBackend()

    async def missing(request: Message, metadata: Mapping[str, str]) -> AsyncIterator[Message]:
        nothing: tuple[Message, ...] = ()
        for item in nothing:  # an async generator that fails before its first message
            yield item
        raise not_found("withdrawals/w404")

    async def breaks(request: Message, metadata: Mapping[str, str]) -> AsyncIterator[Message]:
        yield _event(withdrawal_pb2.STATE_QUEUED)
        if request.name.endswith("crash"):  # type: ignore[attr-defined]
            raise RuntimeError("secret detail")
        raise invalid_argument([FieldViolation("name", "gone")])

    async def scenario(client: TestClient[Any, Any]) -> None:
        backend.stream["WatchWithdrawal"] = missing
        resp = await client.get("/v1/withdrawals/w404:watch")
        assert resp.status == 404
        assert resp.content_type == "application/json"
        backend.stream["WatchWithdrawal"] = breaks
        resp = await client.get("/v1/withdrawals/w1:watch")
        assert resp.status == 200
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
        assert len(lines) == 2
        assert lines[1]["error"]["status"] == "INVALID_ARGUMENT"
        resp = await client.get("/v1/withdrawals/crash:watch")
        text = await resp.text()
        assert "secret" not in text
        assert json.loads(text.splitlines()[-1])["error"]["status"] == "INTERNAL"

    run(backend, scenario)


# ---------------------------------------------------------------- typed query values


def _typed_service() -> ServiceDescriptor:
    """A test-only service with enum, bool, repeated, nested and int64 query fields."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName("resttest.v1.Things")
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="resttest/v1/things.proto",
        package="resttest.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    color = fdp.enum_type.add(name="Color")
    for i, n in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"]):
        color.value.add(name=n, number=i)
    t = descriptor_pb2.FieldDescriptorProto
    inner = fdp.message_type.add(name="Inner")
    inner.field.add(name="limit", number=1, type=t.TYPE_UINT32, json_name="limit")
    req = fdp.message_type.add(name="ListThingsRequest")
    req.field.add(name="parent", number=1, type=t.TYPE_STRING, json_name="parent")
    req.field.add(
        name="color", number=2, type=t.TYPE_ENUM, type_name=".resttest.v1.Color", json_name="color"
    )
    req.field.add(name="flag", number=3, type=t.TYPE_BOOL, json_name="flag")
    req.field.add(
        name="tags", number=4, type=t.TYPE_STRING, label=t.LABEL_REPEATED, json_name="tags"
    )
    req.field.add(
        name="inner_opts",
        number=5,
        type=t.TYPE_MESSAGE,
        type_name=".resttest.v1.Inner",
        json_name="innerOpts",
    )
    req.field.add(name="big", number=6, type=t.TYPE_INT64, json_name="big")
    service = fdp.service.add(name="Things")
    method = service.method.add(
        name="ListThings",
        input_type=".resttest.v1.ListThingsRequest",
        output_type=".resttest.v1.Inner",
    )
    method.options.Extensions[annotations_pb2.http].get = "/v1/{parent=shelves/**}"
    pool.Add(fdp)
    return pool.FindServiceByName("resttest.v1.Things")


def test_typed_query_values() -> None:
    service = _typed_service()
    calls: list[Any] = []

    async def invoke(
        method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        calls.append(request)
        return message_factory.GetMessageClass(method.output_type)()

    app = build_rest_app([RestBinding(service, invoke)], openapi={})

    async def main() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            ok = (
                "/v1/shelves/a/b?color=COLOR_BLUE&flag=true&tags=x&tags=y"
                "&inner_opts.limit=5&big=-9007199254740993"
            )
            assert (await client.get(ok)).status == 200
            assert (await client.get("/v1/shelves/x?color=1&innerOpts.limit=0")).status == 200
            bad = await client.get("/v1/shelves/x?color=GREEN&flag=maybe&inner_opts.limit=-1")
            assert bad.status == 400
            assert set(violations(await bad.json())) == {"color", "flag", "inner_opts.limit"}

    asyncio.run(main())
    first, second = calls
    assert first.parent == "shelves/a/b"
    assert first.color == 2
    assert first.flag is True
    assert list(first.tags) == ["x", "y"]
    assert first.inner_opts.limit == 5
    assert first.big == -9007199254740993
    assert second.color == 1
    assert second.HasField("inner_opts")


def test_streaming_method_needs_a_stream_invoker() -> None:
    async def invoke(
        method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        raise AssertionError

    with pytest.raises(ValueError, match="invoke_stream"):
        build_rest_app([RestBinding(SERVICE, invoke)], openapi={})
