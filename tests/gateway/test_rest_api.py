"""WithdrawalService over REST/JSON (transcoded) against a real gateway on MariaDB and SQLite."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from openapi_spec_validator import validate
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import fresh_address
from withdrawal_shared.db.models import Withdrawal


def count(gateway: RunningGateway, partner: Partner) -> int:
    with gateway.server.store.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.partner_id == partner.id)
            )
            or 0
        )


def body(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "token": "USDC",
        "recipientAddress": fresh_address(),
        "amount": "12.5",
    }
    payload.update(overrides)
    return payload


def create(
    gateway: RunningGateway, partner: Partner, payload: Any, key: str | None = None
) -> httpx.Response:
    headers = {**partner.headers, "Idempotency-Key": key or str(uuid.uuid4())}
    return httpx.post(f"{gateway.base_url}/v1/withdrawals", json=payload, headers=headers)


def error_fields(response: httpx.Response) -> tuple[str, list[str]]:
    error = response.json()["error"]
    reason = ""
    fields: list[str] = []
    for detail in error["details"]:
        if detail["@type"].endswith("google.rpc.ErrorInfo"):
            reason = detail["reason"]
        if detail["@type"].endswith("google.rpc.BadRequest"):
            fields.extend(v["field"] for v in detail["fieldViolations"])
    return reason, fields


def test_create_get_list_cancel(gateway: RunningGateway, partner_a: Partner) -> None:
    response = create(gateway, partner_a, body(clientReference="inv-77", amount="0.5"))
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["state"] == "STATE_RECEIVED"
    assert created["amount"] == "0.5"
    assert created["clientReference"] == "inv-77"
    assert response.headers["x-trace-id"]
    name = created["name"]

    got = httpx.get(f"{gateway.base_url}/v1/{name}", headers=partner_a.headers)
    assert got.status_code == 200 and got.json() == created

    listed = httpx.get(
        f"{gateway.base_url}/v1/withdrawals",
        params={"page_size": 1000, "filter": "state = RECEIVED"},
        headers=partner_a.headers,
    )
    assert listed.status_code == 200
    assert name in [w["name"] for w in listed.json()["withdrawals"]]

    cancelled = httpx.post(
        f"{gateway.base_url}/v1/{name}:cancel",
        json={"reason": "duplicate invoice"},
        headers=partner_a.headers,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "STATE_CANCELLED"


def test_pagination_over_rest(gateway: RunningGateway) -> None:
    partner = gateway.add_partner(f"rest-pages-{uuid.uuid4().hex[:6]}")
    names = [create(gateway, partner, body()).json()["name"] for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, Any] = {"pageSize": 2}
        if token:
            params["pageToken"] = token
        page = httpx.get(
            f"{gateway.base_url}/v1/withdrawals", params=params, headers=partner.headers
        ).json()
        seen.extend(w["name"] for w in page["withdrawals"])
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == list(reversed(names))


def test_idempotency_key_header(gateway: RunningGateway, partner_a: Partner) -> None:
    key = str(uuid.uuid4())
    payload = body()
    first = create(gateway, partner_a, payload, key)
    second = create(gateway, partner_a, payload, key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    different = create(gateway, partner_a, {**payload, "amount": "99"}, key)
    assert different.status_code == 409
    assert error_fields(different)[0] == "IDEMPOTENCY_KEY_REUSED"


def test_concurrent_repeats_over_rest(gateway: RunningGateway, partner_a: Partner) -> None:
    key = str(uuid.uuid4())
    payload = body()
    before = count(gateway, partner_a)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        results.append(create(gateway, partner_a, payload, key))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in results] == [200] * 20
    assert len({r.json()["name"] for r in results}) == 1
    assert count(gateway, partner_a) == before + 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(recipientAddress="0xnothex"), "recipientAddress"),
        (
            body(recipientAddress="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            "recipientAddress",
        ),
        (body(recipientAddress="0x" + "0" * 40), "recipientAddress"),
        (body(amount="0"), "amount"),
        (body(amount="-1"), "amount"),
        (body(amount="1.0000001"), "amount"),
        (body(amount=12.5), "amount"),
        (body(token="XYZ"), "token"),
        ({"token": "USDC", "amount": "1"}, "recipientAddress"),
        (body(unknownField=1), "unknownField"),
    ],
)
def test_invalid_input_is_400_naming_the_field(
    gateway: RunningGateway, partner_a: Partner, payload: dict[str, Any], field: str
) -> None:
    before = count(gateway, partner_a)
    response = create(gateway, partner_a, payload)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    _, fields = error_fields(response)
    assert field in fields, fields
    assert "Traceback" not in response.text
    assert count(gateway, partner_a) == before


def violation(response: httpx.Response) -> tuple[str, str]:
    """The only field violation of a 400: (field, description)."""
    assert response.status_code == 400, response.text
    for detail in response.json()["error"]["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            only = detail["fieldViolations"]
            assert len(only) == 1, only
            return only[0]["field"], only[0]["description"]
    raise AssertionError(response.text)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            body(amount=12.5),
            ("amount", 'must be a decimal string such as "12.5", not a number'),
        ),
        (
            body(priority="FAST"),
            (
                "priority",
                "must be one of PRIORITY_UNSPECIFIED, PRIORITY_STANDARD, PRIORITY_PRIORITY, "
                'PRIORITY_EMERGENCY; got "FAST"',
            ),
        ),
        (body(clientReference={"id": 7}), ("clientReference", "must be a string, not an object")),
        (
            body(recipientAddress=["0x" + "1" * 40]),
            ("recipientAddress", "must be a string of 0x and 40 hexadecimal digits such as"),
        ),
        (body(confirmations="many"), ("confirmations", "must be an integer from")),
    ],
)
def test_json_type_mistakes_name_the_field_and_what_it_takes(
    gateway: RunningGateway, partner_a: Partner, payload: dict[str, Any], expected: tuple[str, str]
) -> None:
    """What a partner hit: Python type names instead of the field and what it takes."""
    response = create(gateway, partner_a, payload)
    field, description = violation(response)
    assert field == expected[0]
    assert description.startswith(expected[1])
    for python in ("float", "dict", "bytes-like", "got 'str'", "int()"):
        assert python not in response.text


def test_deeply_nested_json_is_400(gateway: RunningGateway, partner_a: Partner) -> None:
    deep = b'{"clientReference":' + b"[" * 5000 + b"]" * 5000 + b"}"
    headers = {**partner_a.headers, "Idempotency-Key": str(uuid.uuid4())}
    response = httpx.post(f"{gateway.base_url}/v1/withdrawals", content=deep, headers=headers)
    assert violation(response) == ("body", "nests objects and arrays more than 32 levels deep")
    assert "recursion" not in response.text


def test_missing_idempotency_key_is_400(gateway: RunningGateway, partner_a: Partner) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/withdrawals", json=body(), headers=partner_a.headers
    )
    assert response.status_code == 400
    assert error_fields(response)[1] == ["Idempotency-Key"]
    assert "(Idempotency-Key: is required" in response.json()["error"]["message"]


def test_rest_names_fields_as_sent_and_grpc_keeps_proto_names(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    payload = body(recipientAddress="0xnothex", amount="-1")
    rest = httpx.post(f"{gateway.base_url}/v1/withdrawals", json=payload, headers=partner_a.headers)
    assert rest.status_code == 400
    assert error_fields(rest)[1] == ["Idempotency-Key", "recipientAddress", "amount"]
    message = rest.json()["error"]["message"]
    assert "recipientAddress: must be 0x followed by 40 hexadecimal digits" in message
    assert "recipient_address" not in message and "request_id" not in message
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(
            withdrawal_pb2.CreateWithdrawalRequest(
                withdrawal=withdrawal_pb2.Withdrawal(
                    token="USDC", recipient_address="0xnothex", amount="-1"
                )
            ),
            metadata=partner_a.metadata,
        )
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [
        "request_id",
        "withdrawal.recipient_address",
        "withdrawal.amount",
    ]


def test_malformed_json_is_400_and_an_oversized_body_413(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    before = count(gateway, partner_a)
    headers = {
        **partner_a.headers,
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    broken = httpx.post(
        f"{gateway.base_url}/v1/withdrawals", content=b'{"token": "USDC",', headers=headers
    )
    assert broken.status_code == 400
    assert error_fields(broken)[1] == ["body"]
    huge = json.dumps(body(clientReference="x" * 200_000)).encode()
    oversized = httpx.post(f"{gateway.base_url}/v1/withdrawals", content=huge, headers=headers)
    assert oversized.status_code == 413
    error = oversized.json()["error"]
    assert error["code"] == 413
    assert error["message"] == (
        "The request body is larger than the limit of 65536 bytes; send a smaller one."
    )
    assert error_fields(oversized) == ("BODY_TOO_LARGE", ["body"])
    assert count(gateway, partner_a) == before


def test_authentication_and_isolation(
    gateway: RunningGateway, partner_a: Partner, partner_b: Partner
) -> None:
    no_key = httpx.post(
        f"{gateway.base_url}/v1/withdrawals",
        json=body(),
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert no_key.status_code == 401
    bad_key = httpx.get(
        f"{gateway.base_url}/v1/withdrawals",
        headers={"Authorization": "Bearer awk_deadbeef_" + "0" * 64},
    )
    assert bad_key.status_code == 401
    assert bad_key.json()["error"]["status"] == "UNAUTHENTICATED"
    name = create(gateway, partner_a, body()).json()["name"]
    other = httpx.get(f"{gateway.base_url}/v1/{name}", headers=partner_b.headers)
    assert other.status_code == 404
    assert other.json()["error"]["status"] == "NOT_FOUND"


def test_watch_streams_ndjson(gateway: RunningGateway, partner_a: Partner) -> None:
    name = create(gateway, partner_a, body()).json()["name"]
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{gateway.base_url}/v1/{name}:watch", headers=partner_a.headers, timeout=20
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        lines = stream.iter_lines()
        events.append(json.loads(next(lines)))
        cancel = httpx.post(f"{gateway.base_url}/v1/{name}:cancel", headers=partner_a.headers)
        assert cancel.status_code == 200
        events.extend(json.loads(line) for line in lines if line)
    assert [e["eventType"] for e in events] == ["EVENT_TYPE_SNAPSHOT", "EVENT_TYPE_STATE_CHANGED"]
    assert [e["withdrawal"]["state"] for e in events] == ["STATE_RECEIVED", "STATE_CANCELLED"]


def test_openapi_document_validates(gateway: RunningGateway) -> None:
    document = httpx.get(f"{gateway.base_url}/openapi.json").json()
    validate(document)
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {
        "CreateWithdrawal",
        "GetWithdrawal",
        "ListWithdrawals",
        "CancelWithdrawal",
        "WatchWithdrawal",
    } <= operations
    create = document["paths"]["/v1/withdrawals"]["post"]
    assert {"400", "401", "409", "413", "500"} <= set(create["responses"])
    assert (
        "IDEMPOTENCY_KEY_REUSED"
        in create["responses"]["409"]["content"]["application/json"]["examples"]
    )
    header = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert header["required"] is True
    assert document["servers"] == [{"url": "/"}]


def test_unknown_route_is_404_json(gateway: RunningGateway, partner_a: Partner) -> None:
    response = httpx.get(f"{gateway.base_url}/v2/nothing", headers=partner_a.headers)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_fuzzing_regressions(gateway: RunningGateway, partner_a: Partner) -> None:
    """Found by schemathesis against /openapi.json (tests/fuzz)."""
    # Authentication comes before input validation: no 400 about a field without a key.
    bad = httpx.get(f"{gateway.base_url}/v1/withdrawals/0:watch?resume_after_version=")
    assert bad.status_code == 401, bad.text
    assert error_fields(bad) == ("UNAUTHENTICATED", [])
    bad = httpx.post(f"{gateway.base_url}/v1/withdrawals", content=b"{,")
    assert bad.status_code == 401, bad.text
    # A path holding a newline is routed like any other (JSON error, not aiohttp's text 404).
    odd = httpx.get(f"{gateway.base_url}/v1/withdrawals/a%0Ab", headers=partner_a.headers)
    assert odd.status_code == 400 and odd.headers["content-type"].startswith("application/json")
    assert error_fields(odd) == ("INVALID_ARGUMENT", ["name"])
    nowhere = httpx.get(f"{gateway.base_url}/v1/a%0Ab", headers=partner_a.headers)
    assert nowhere.status_code == 404 and error_fields(nowhere)[0] == "NOT_FOUND"
    # A query parameter with an empty name is a violation whose field is "" (always present).
    empty = httpx.get(f"{gateway.base_url}/v1/withdrawals?=null", headers=partner_a.headers)
    assert empty.status_code == 400
    assert error_fields(empty) == ("INVALID_ARGUMENT", [""])
