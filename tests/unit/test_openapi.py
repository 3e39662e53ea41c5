"""The OpenAPI document generated from the WithdrawalService `google.api.http` rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.api import annotations_pb2  # noqa: F401 - registers the http extension
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from openapi_spec_validator import validate

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.rest import RestBinding, build_openapi, build_rest_app, default_descriptor_set
from svc_gateway.rest.openapi import load_comments

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
            "schema": {"type": "string"},
        }
    ]
    listing = {p["name"]: p for p in ops["ListWithdrawals"][2]["parameters"]}
    assert set(listing) == {"page_size", "page_token", "filter"}
    assert listing["page_size"]["in"] == "query"
    assert listing["page_size"]["schema"] == {"type": "integer", "format": "int32"}
    assert "at most 1000" in listing["page_size"]["description"]
    create = {p["name"]: p for p in ops["CreateWithdrawal"][2]["parameters"]}
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
