"""The partners' part of the gateway's OpenAPI document, for client SDKs generated from it.

`gateway_openapi()` builds the document exactly as the gateway serves it at `GET /openapi.json`
(every service, the batch upload route). `partner_document(doc)` keeps what a partner's API key
can call: every path but the admin API (`/v1/admin/`), the tags in use, and only the schemas
those operations reach. `python -m svc_gateway.rest.partner_openapi OUT.json` writes it, sorted
and indented, as `sdk/typescript/openapi.json` is (`make sdk-typescript-gen`); the SDK's tests
compare the committed copy with a fresh build and with what a running gateway serves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from svc_gateway.admin.servicer import SERVICE as ADMIN_SERVICE
from svc_gateway.rest.openapi import build_openapi, default_descriptor_set
from svc_gateway.rest.upload import document_batch_routes
from svc_gateway.webhook_servicer import SERVICE as WEBHOOK_SERVICE

ADMIN_PREFIX = "/v1/admin/"
_SCHEMA_REF = "#/components/schemas/"
_RESPONSE_REF = "#/components/responses/"


def gateway_openapi() -> dict[str, Any]:
    """The document a gateway serves at /openapi.json (as `svc_gateway.server` builds it)."""
    document = build_openapi(
        [
            withdrawal_pb2.DESCRIPTOR.services_by_name["WithdrawalService"],
            batch_pb2.DESCRIPTOR.services_by_name["BatchService"],
            WEBHOOK_SERVICE,
            ADMIN_SERVICE,
        ],
        title="Asset Withdrawal System API",
        version="v1",
        source_descriptor_set=default_descriptor_set(),
    )
    document_batch_routes(document)
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def partner_document(document: dict[str, Any]) -> dict[str, Any]:
    """`document` without the admin API: its paths, tags and the components only they use."""
    paths = {p: ops for p, ops in document["paths"].items() if not p.startswith(ADMIN_PREFIX)}
    components = document["components"]
    schemas: dict[str, Any] = components["schemas"]
    responses: dict[str, Any] = components.get("responses", {})
    kept_schemas: set[str] = set()
    kept_responses: set[str] = set()
    pending = list(_refs(paths))
    while pending:
        ref = pending.pop()
        if ref.startswith(_SCHEMA_REF):
            name = ref.removeprefix(_SCHEMA_REF)
            if name not in kept_schemas:
                kept_schemas.add(name)
                pending.extend(_refs(schemas[name]))
        elif ref.startswith(_RESPONSE_REF):
            name = ref.removeprefix(_RESPONSE_REF)
            if name not in kept_responses:
                kept_responses.add(name)
                pending.extend(_refs(responses[name]))
    used_tags = {tag for ops in paths.values() for op in ops.values() for tag in op.get("tags", [])}
    return {
        **document,
        "tags": [tag for tag in document.get("tags", []) if tag["name"] in used_tags],
        "paths": paths,
        "components": {
            **components,
            "schemas": {k: v for k, v in schemas.items() if k in kept_schemas},
            "responses": {k: v for k, v in responses.items() if k in kept_responses},
        },
    }


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m svc_gateway.rest.partner_openapi OUT.json\n")
        return 2
    Path(argv[0]).write_text(render(partner_document(gateway_openapi())), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
