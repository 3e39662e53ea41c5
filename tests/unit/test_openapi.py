"""The OpenAPI document generated from the WithdrawalService `google.api.http` rules."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.api import (
    annotations_pb2,  # noqa: F401 - registers the http extension
    field_behavior_pb2,
)
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.errors import METHOD_ERRORS
from svc_gateway.rest import RestBinding, build_openapi, build_rest_app, default_descriptor_set
from svc_gateway.rest.formats import FIELD_FORMATS
from svc_gateway.rest.json_body import check_message
from svc_gateway.rest.openapi import load_comments
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared.addresses import AddressError, parse_address
from withdrawal_shared.amounts import AmountError, parse_amount
from withdrawal_shared.errors import ERROR_DOMAIN

SERVICE: ServiceDescriptor = withdrawal_pb2.DESCRIPTOR.services_by_name["WithdrawalService"]
PKG = "assetwithdrawal.withdrawal.v1"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    source = default_descriptor_set()
    assert source, "gen/assetwithdrawal/descriptors.binpb is missing"
    return build_openapi(
        [SERVICE], title="Asset Withdrawal API", version="v1", source_descriptor_set=source
    )


def operations(document: Mapping[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (path, verb, op)
        for path, item in document["paths"].items()
        for verb, op in item.items()
    }


def schema(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def test_document_validates_with_and_without_source_info(doc: dict[str, Any]) -> None:
    validate(doc)
    bare = build_openapi([SERVICE], title="t", version="0")
    validate(bare)
    assert "description" not in operations(bare)["GetWithdrawal"][2]
    json.dumps(doc)  # JSON-ready


def test_one_operation_per_http_rule(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    assert {name: (path, verb) for name, (path, verb, _) in ops.items()} == {
        "CreateWithdrawal": ("/v1/withdrawals", "post"),
        "GetWithdrawal": ("/v1/withdrawals/{withdrawal}", "get"),
        "ListWithdrawals": ("/v1/withdrawals", "get"),
        "ListStateChanges": ("/v1/withdrawals/{withdrawal}/stateChanges", "get"),
        "CancelWithdrawal": ("/v1/withdrawals/{withdrawal}:cancel", "post"),
        "WatchWithdrawal": ("/v1/withdrawals/{withdrawal}:watch", "get"),
    }
    for _, _, op in ops.values():
        assert op["tags"] == ["WithdrawalService"]
        assert op["responses"]["default"] == {"$ref": "#/components/responses/Error"}


def test_parameters(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    get = ops["GetWithdrawal"][2]
    assert get["parameters"] == [
        {
            "name": "withdrawal",
            "in": "path",
            "required": True,
            "description": "Part of the `name` field: `withdrawals/*`.",
            "schema": {
                "type": "string",
                "pattern": "^[0-9a-hjkmnp-tv-z]{26}$",
                "example": "01j9zq8m5k3v7t2r4w6y8a0c1e",
            },
        }
    ]
    listing = {p["name"]: p for p in ops["ListWithdrawals"][2]["parameters"]}
    assert set(listing) == {"page_size", "page_token", "filter"}
    assert listing["page_size"]["in"] == "query"
    assert listing["page_size"]["schema"] == {"type": "integer", "format": "int32", "minimum": 0}
    assert "at most 1000" in listing["page_size"]["description"]
    create = {p["name"]: p for p in ops["CreateWithdrawal"][2]["parameters"]}
    assert set(create) == {"Idempotency-Key"}  # the request_id parameter is described there
    assert create["Idempotency-Key"]["in"] == "header"
    for name in ("GetWithdrawal", "ListWithdrawals", "CancelWithdrawal", "WatchWithdrawal"):
        params = ops[name][2].get("parameters", [])
        assert "Idempotency-Key" not in {p["name"] for p in params}


def test_request_bodies(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    create = ops["CreateWithdrawal"][2]["requestBody"]
    assert create["required"] is True
    body = create["content"]["application/json"]["schema"]
    assert body["allOf"] == [{"$ref": f"#/components/schemas/{PKG}.Withdrawal"}]
    cancel = ops["CancelWithdrawal"][2]["requestBody"]["content"]["application/json"]["schema"]
    assert set(cancel["properties"]) == {"reason"}  # `name` comes from the path
    for name in ("GetWithdrawal", "ListWithdrawals", "WatchWithdrawal"):
        assert "requestBody" not in ops[name][2]


def test_responses_and_streaming(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    ok = ops["GetWithdrawal"][2]["responses"]["200"]["content"]
    assert ok == {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{PKG}.Withdrawal"}}
    }
    watch = ops["WatchWithdrawal"][2]["responses"]["200"]["content"]
    assert watch == {
        "application/x-ndjson": {
            "schema": {"$ref": f"#/components/schemas/{PKG}.WatchWithdrawalResponse"}
        }
    }
    error = schema(doc, "Error")["properties"]["error"]
    assert set(error["properties"]) == {"code", "status", "message", "details"}


def test_message_schemas_follow_proto3_json(doc: dict[str, Any]) -> None:
    w = schema(doc, f"{PKG}.Withdrawal")
    props = w["properties"]
    assert set(w["required"]) == {"token", "recipientAddress", "amount"}
    assert props["version"]["type"] == "string"
    assert props["version"]["format"] == "int64"
    assert props["createTime"]["type"] == "string"
    assert props["createTime"]["format"] == "date-time"
    assert props["createTime"]["readOnly"] is True
    assert props["state"]["readOnly"] is True
    assert props["state"]["allOf"] == [{"$ref": f"#/components/schemas/{PKG}.State"}]
    assert "readOnly" not in props["amount"]
    assert props["confirmations"]["type"] == "integer"
    assert "EIP-55" in props["recipientAddress"]["description"]
    state = schema(doc, f"{PKG}.State")
    assert state["type"] == "string"
    assert "STATE_COMPLETED" in state["enum"]
    assert "`STATE_COMPLETED`: Paid" in state["description"]
    listing = schema(doc, f"{PKG}.ListWithdrawalsResponse")["properties"]["withdrawals"]
    assert listing["type"] == "array"
    assert listing["items"] == {"$ref": f"#/components/schemas/{PKG}.Withdrawal"}


def test_bearer_security_applies_globally(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearerAuth": []}]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"


def test_comments_degrade_gracefully() -> None:
    assert load_comments(None) == {}
    assert load_comments(b"\xff\xff not a descriptor set") == {}
    comments = load_comments(default_descriptor_set())
    assert comments[f"{PKG}.WithdrawalService.GetWithdrawal"].startswith("Gets one withdrawal")
    assert comments[f"{PKG}.Withdrawal.fee"].startswith("This withdrawal's share")


def test_gateway_serves_the_generated_document(doc: dict[str, Any]) -> None:
    async def invoke(
        method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> Message:
        raise AssertionError

    async def invoke_stream(
        method: MethodDescriptor, request: Message, metadata: Mapping[str, str]
    ) -> AsyncIterator[Message]:
        nothing: tuple[Message, ...] = ()
        for item in nothing:
            yield item
        raise AssertionError

    async def fetch(openapi: dict[str, Any] | None) -> dict[str, Any]:
        app = build_rest_app([RestBinding(SERVICE, invoke, invoke_stream)], openapi=openapi)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            resp = await client.get("/openapi.json")
            assert resp.status == 200
            assert resp.content_type == "application/json"
            served: dict[str, Any] = await resp.json()
            return served

    assert asyncio.run(fetch(doc)) == doc
    generated = asyncio.run(fetch(None))  # built from the bindings by default
    validate(generated)
    assert set(operations(generated)) == set(operations(doc))


# ---------------------------------------------------------------- errors, formats, examples


def reasons_by_status(op: Mapping[str, Any]) -> dict[str, set[str]]:
    """HTTP status -> the ErrorInfo reasons of its examples."""
    out: dict[str, set[str]] = {}
    for status, response in op["responses"].items():
        if status in ("200", "default"):
            continue
        examples = response["content"]["application/json"]["examples"]
        out[status] = set(examples)
        for reason, example in examples.items():
            assert f"`{reason}`" in response["description"]
            assert example["value"]["error"]["code"] == int(status)
    return out


def test_every_route_documents_its_error_statuses_and_reasons(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for name, (_, _, op) in ops.items():
        found = reasons_by_status(op)
        assert "INVALID_ARGUMENT" in found["400"], name
        assert found["401"] == {"UNAUTHENTICATED"}, name
        assert found["500"] == {"INTERNAL"}, name
        assert found["403"] == {"SCOPE_MISSING"}, name
        assert found["429"] == {"RATE_LIMITED"}, name
        assert found["503"] == {"UNAVAILABLE"}, name
    create = reasons_by_status(ops["CreateWithdrawal"][2])
    assert create["409"] == {"IDEMPOTENCY_KEY_REUSED", "CLIENT_REFERENCE_REUSED"}
    assert create["413"] == {"BODY_TOO_LARGE"}
    assert {"UNKNOWN_TOKEN", "AMOUNT_ABOVE_MAXIMUM", "SYSTEM_ADDRESS"} <= create["400"]
    assert "404" not in create
    cancel = reasons_by_status(ops["CancelWithdrawal"][2])
    assert "WITHDRAWAL_NOT_CANCELLABLE" in cancel["400"]
    assert cancel["409"] == {"CONCURRENT_MODIFICATION"}
    assert cancel["404"] == {"NOT_FOUND"}
    for name in ("GetWithdrawal", "WatchWithdrawal"):
        assert reasons_by_status(ops[name][2])["404"] == {"NOT_FOUND"}
    for name in ("GetWithdrawal", "ListWithdrawals", "WatchWithdrawal"):
        assert "413" not in reasons_by_status(ops[name][2])


def test_statuses_follow_the_error_catalog(doc: dict[str, Any]) -> None:
    """The documented statuses and reasons are METHOD_ERRORS, the constants the code raises."""
    for method in SERVICE.methods:
        op = operations(doc)[method.name][2]
        expected: dict[str, set[str]] = {}
        for reason in METHOD_ERRORS[method.full_name]:
            expected.setdefault(str(reason.status), set()).add(reason.reason)
        assert reasons_by_status(op) == expected


def test_error_examples_match_the_error_schema(doc: dict[str, Any]) -> None:
    validator = OAS30Validator(
        {**schema(doc, "Error"), "components": doc["components"]},
    )
    bodies = [
        example["value"]
        for _, _, op in operations(doc).values()
        for status, response in op["responses"].items()
        if status not in ("200", "default")
        for example in response["content"]["application/json"]["examples"].values()
    ]
    bodies.append(doc["components"]["responses"]["Error"]["content"]["application/json"]["example"])
    for body in bodies:
        validator.validate(body)
        info = body["error"]["details"][0]
        assert info["domain"] == ERROR_DOMAIN
    too_large = operations(doc)["CreateWithdrawal"][2]["responses"]["413"]
    value = too_large["content"]["application/json"]["examples"]["BODY_TOO_LARGE"]["value"]
    assert value["error"]["details"][1]["fieldViolations"] == [
        {"field": "body", "description": "is larger than 65536 bytes"}
    ]
    invalid = operations(doc)["CreateWithdrawal"][2]["responses"]["400"]
    value = invalid["content"]["application/json"]["examples"]["INVALID_ARGUMENT"]["value"]
    assert value["error"]["details"][1]["fieldViolations"][0]["field"] == "amount"
    assert schema(doc, "google.rpc.ErrorInfo")["properties"]["domain"]["enum"] == [ERROR_DOMAIN]


def test_idempotency_key_is_required_for_create(doc: dict[str, Any]) -> None:
    create = {p["name"]: p for p in operations(doc)["CreateWithdrawal"][2]["parameters"]}
    header = create["Idempotency-Key"]
    assert header["required"] is True
    assert "409 `IDEMPOTENCY_KEY_REUSED`" in header["description"]
    assert "`request_id` query parameter" in header["description"]
    assert re.fullmatch(header["schema"]["pattern"], header["schema"]["example"])
    assert header["schema"]["pattern"] == REQUEST_ID.pattern


def test_amounts_and_addresses_have_patterns_and_examples(doc: dict[str, Any]) -> None:
    props = schema(doc, f"{PKG}.Withdrawal")["properties"]
    for name in ("amount", "fee"):
        amount = props[name]
        assert amount["type"] == "string"
        assert amount["example"] == "12.5"
        pattern = re.compile(amount["pattern"])
        for good in ("12.5", "0.000001", "100"):
            assert pattern.fullmatch(good)
            assert parse_amount(good, 6) > 0
        for bad in ("12,5", "1e3", "-1", "+1", ".5", "01", "1.", " 1"):
            assert not pattern.fullmatch(bad), bad
            with pytest.raises(AmountError):
                parse_amount(bad, 6)
    address = props["recipientAddress"]
    assert address["pattern"] == "^0x[0-9a-fA-F]{40}$"
    assert parse_address(address["example"]) == address["example"].lower()
    for bad in ("0x1234", "52908400098527886e0f7030069857d2e4169ee7", "0x" + "g" * 40):
        assert not re.fullmatch(address["pattern"], bad)
        with pytest.raises(AddressError):
            parse_address(bad)


def test_output_only_fields_are_read_only(doc: dict[str, Any]) -> None:
    for message in (withdrawal_pb2.Withdrawal, withdrawal_pb2.ListWithdrawalsResponse):
        desc = message.DESCRIPTOR
        props = schema(doc, desc.full_name)["properties"]
        for fd in desc.fields:
            behaviors = set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])
            output = bool(
                behaviors & {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER}
            )
            assert props[fd.json_name].get("readOnly", False) is output, fd.name
    props = schema(doc, f"{PKG}.Withdrawal")["properties"]
    assert {k for k, v in props.items() if not v.get("readOnly")} == {
        "clientReference",
        "chain",
        "token",
        "recipientAddress",
        "amount",
        "priority",
        "userRef",
    }


def test_servers_and_create_examples(doc: dict[str, Any]) -> None:
    assert doc["servers"] == [{"url": "/"}]
    based = build_openapi([SERVICE], title="t", version="0", server_url="https://api.example")
    assert based["servers"] == [{"url": "https://api.example"}]
    create = operations(doc)["CreateWithdrawal"][2]
    request = create["requestBody"]["content"]["application/json"]["example"]
    violations, _ = check_message(request, withdrawal_pb2.Withdrawal.DESCRIPTOR, FIELD_FORMATS)
    assert violations == []
    assert request["amount"] == "12.5"
    response = create["responses"]["200"]["content"]["application/json"]["example"]
    parsed = json_format.ParseDict(response, withdrawal_pb2.Withdrawal())
    assert parsed.state == withdrawal_pb2.STATE_RECEIVED
    assert parsed.amount == request["amount"]
    assert set(response) <= set(schema(doc, f"{PKG}.Withdrawal")["properties"])


def test_document_describes_what_the_gateway_accepts_and_answers(doc: dict[str, Any]) -> None:
    """Found by fuzzing the REST API with schemathesis against the document: the document
    promised what the gateway refuses, or refused what it answers."""
    from withdrawal_shared.ids import is_ulid, new_ulid

    ops = operations(doc)
    # An id the path pattern allows is one the gateway takes as a withdrawal name (a non-ULID
    # such as "0" is INVALID_ARGUMENT, not a valid request), and a real id matches it.
    for name in ("GetWithdrawal", "CancelWithdrawal", "WatchWithdrawal"):
        (param,) = ops[name][2]["parameters"][:1]
        pattern = re.compile(param["schema"]["pattern"])
        assert pattern.search(new_ulid()) and not pattern.search("0")
        assert is_ulid(param["schema"]["example"])
    # Negative page sizes and resume versions are refused, so the document says so.
    watch = {p["name"]: p for p in ops["WatchWithdrawal"][2]["parameters"]}
    assert watch["resume_after_version"]["schema"]["pattern"] == "^[0-9]+$"
    withdrawal = schema(doc, f"{PKG}.Withdrawal")
    props = withdrawal["properties"]
    # Required strings cannot be empty (proto3 reads "" as missing)...
    for field in ("token", "recipientAddress", "amount"):
        assert props[field]["minLength"] == 1, field
    # ...and output fields with a format are printed "" until set (fee until mined).
    for field in ("fee", "transactionHash"):
        assert re.search(props[field]["pattern"], ""), field
    assert re.search(props["fee"]["pattern"], "0.0042") and not re.search(
        props["fee"]["pattern"], "1e5"
    )
    assert props["version"]["pattern"] == "^-?[0-9]+$"
    fresh = json_format.MessageToDict(
        withdrawal_pb2.Withdrawal(
            name="withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e",
            token="USDC",
            recipient_address="0x" + "ab" * 20,
            amount="1",
            version=1,
        ),
        always_print_fields_with_no_presence=True,
    )
    validator = OAS30Validator({**withdrawal, "components": doc["components"]})
    errors = [e.message for e in validator.iter_errors(fresh) if "readOnly" not in e.message]
    assert errors == []
