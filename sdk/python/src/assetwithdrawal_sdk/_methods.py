"""The RPCs the SDK calls, read from the generated descriptors: the gRPC path, the REST
mapping (the `google.api.http` rule the gateway transcodes) and whether a retry is safe (the
proto's `idempotency_level`). Nothing here is written by hand per method."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.api import annotations_pb2
from google.protobuf import descriptor, descriptor_pb2, json_format
from google.protobuf.message import Message

from assetwithdrawal_sdk._gen.assetwithdrawal.webhooks.v1 import webhooks_pb2
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2

_IDEMPOTENT = (
    descriptor_pb2.MethodOptions.IDEMPOTENT,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
)
# Not IDEMPOTENT in the proto, but idempotent on the request_id the SDK always sets.
_IDEMPOTENT_BY_KEY = frozenset({"CreateWebhookEndpoint"})
_VARIABLE = re.compile(r"\{([a-z_.]+)(?:=([^}]*))?\}")
REQUEST_ID = "request_id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
QueryItems = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class Method:
    name: str
    grpc_path: str
    http_verb: str
    http_path: str
    http_body: str
    safe_to_retry: bool
    """A retry after an unknown outcome (UNAVAILABLE, DEADLINE_EXCEEDED) cannot do twice."""


def _methods() -> dict[str, Method]:
    found: dict[str, Method] = {}
    for file in (withdrawal_pb2.DESCRIPTOR, batch_pb2.DESCRIPTOR, webhooks_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                options: Any = method.GetOptions()
                rule = options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern") or "post"
                found[method.name] = Method(
                    name=method.name,
                    grpc_path=f"/{service.full_name}/{method.name}",
                    http_verb=verb.upper(),
                    http_path=getattr(rule, verb) if verb != "custom" else rule.custom.path,
                    http_body=rule.body,
                    safe_to_retry=options.idempotency_level in _IDEMPOTENT
                    or method.name in _IDEMPOTENT_BY_KEY,
                )
    return found


METHODS = _methods()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _field_value(message: Message, path: str) -> str:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    return str(value)


def _drop(data: dict[str, Any], path: str) -> None:
    parts = [_camel(p) for p in path.split(".")]
    for part in parts[:-1]:
        data = data.get(part, {})
    data.pop(parts[-1], None)


def _query_items(prefix: str, value: Any) -> QueryItems:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _query_items(f"{prefix}.{k}", v)]
    if isinstance(value, list):
        return [item for v in value for item in _query_items(prefix, v)]
    if isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    return [(prefix, str(value))]


@dataclass(frozen=True)
class HttpRequest:
    verb: str
    path: str
    query: QueryItems
    body: dict[str, Any] | None
    headers: dict[str, str]


def http_request(method: Method, request: Message) -> HttpRequest:
    """The REST request the gateway transcodes into `request`: path variables filled in
    (percent-encoded, `/` kept), the body per the rule, other fields as query parameters in
    lowerCamelCase, and `request_id` as the `Idempotency-Key` header."""
    data: dict[str, Any] = json_format.MessageToDict(request, preserving_proto_field_name=False)
    headers: dict[str, str] = {}
    fields = request.DESCRIPTOR.fields_by_name
    if REQUEST_ID in fields and fields[REQUEST_ID].type == descriptor.FieldDescriptor.TYPE_STRING:
        request_id = getattr(request, REQUEST_ID)
        if request_id:
            headers[IDEMPOTENCY_HEADER] = request_id
        data.pop(_camel(REQUEST_ID), None)

    def fill(match: re.Match[str]) -> str:
        field = match.group(1)
        _drop(data, field)
        return quote(_field_value(request, field), safe="/")

    path = _VARIABLE.sub(fill, method.http_path)
    body: dict[str, Any] | None = None
    if method.http_body == "*":
        body, data = data, {}
    elif method.http_body:
        body = data.pop(_camel(method.http_body), {})
    query = [item for key, value in data.items() for item in _query_items(key, value)]
    return HttpRequest(method.http_verb, path, query, body, headers)
