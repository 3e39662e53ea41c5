"""OpenAPI 3.0.3 document generated from the same `google.api.http` rules the transcoder serves.

`build_openapi(services, title=..., version=...)` walks the service descriptors: one operation
per HTTP binding (operationId = method name), path/query/header parameters, request body per
the rule's `body`, proto3 JSON schemas for every reachable message and enum (`readOnly` on
OUTPUT_ONLY and IDENTIFIER fields, `pattern` and `example` on the string fields of
`field_formats`), one response per HTTP status an RPC can answer with (from `errors`: every
ErrorInfo reason of that status, with an example body each) on a shared `google.rpc.Status`
JSON schema, request/response examples, a relative `servers` entry and bearer authentication.
Descriptions come from proto comments when a FileDescriptorSet with source info is given
(`default_descriptor_set()` loads the generated one).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped,unused-ignore]
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import DecodeError

from svc_gateway.errors import METHOD_ERRORS
from svc_gateway.rest.formats import (
    FIELD_FORMATS,
    NON_NEGATIVE_FIELDS,
    OPERATION_EXAMPLES,
    SEGMENT_FORMATS,
    FieldFormat,
    OperationExample,
)
from svc_gateway.rest.http_rule import (
    FieldPath,
    PathTemplate,
    RuleBinding,
    http_rule_of,
    is_map_field,
    query_fields,
    resolve_field,
    rule_bindings,
)
from withdrawal_shared.errors import ERROR_DOMAIN, INTERNAL, ErrorReason, status_to_json

logger = logging.getLogger(__name__)

Schema = dict[str, Any]

NDJSON = "application/x-ndjson"
_REQUEST_ID = "request_id"
_IDEMPOTENCY_HEADER = "Idempotency-Key"

_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]+)?s$",
        "description": "A duration in seconds with an `s` suffix, e.g. `1.5s`.",
    },
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated paths."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
_WRAPPERS: dict[str, int] = {
    "google.protobuf.DoubleValue": FieldDescriptor.TYPE_DOUBLE,
    "google.protobuf.FloatValue": FieldDescriptor.TYPE_FLOAT,
    "google.protobuf.Int64Value": FieldDescriptor.TYPE_INT64,
    "google.protobuf.UInt64Value": FieldDescriptor.TYPE_UINT64,
    "google.protobuf.Int32Value": FieldDescriptor.TYPE_INT32,
    "google.protobuf.UInt32Value": FieldDescriptor.TYPE_UINT32,
    "google.protobuf.BoolValue": FieldDescriptor.TYPE_BOOL,
    "google.protobuf.StringValue": FieldDescriptor.TYPE_STRING,
    "google.protobuf.BytesValue": FieldDescriptor.TYPE_BYTES,
}

_ERROR_INFO_SCHEMA: Schema = {
    "type": "object",
    "description": "Why the request failed, for programs: branch on `reason`.",
    "required": ["@type", "reason", "domain"],
    "properties": {
        "@type": {"type": "string", "enum": ["type.googleapis.com/google.rpc.ErrorInfo"]},
        "reason": {
            "type": "string",
            "description": "Machine-readable reason, e.g. `IDEMPOTENCY_KEY_REUSED`; each "
            "operation lists the reasons it can answer with under its responses.",
        },
        "domain": {"type": "string", "enum": [ERROR_DOMAIN]},
        "metadata": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Facts about the error, e.g. `limit_bytes` or `withdrawal`.",
        },
    },
}
_BAD_REQUEST_SCHEMA: Schema = {
    "type": "object",
    "description": "Every bad field of the request at once.",
    "required": ["@type", "fieldViolations"],
    "properties": {
        "@type": {"type": "string", "enum": ["type.googleapis.com/google.rpc.BadRequest"]},
        "fieldViolations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "description"],
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "The field as the request named it: its JSON path in "
                        "the body (`recipientAddress`), the query parameter as sent, "
                        "`Idempotency-Key`, or `body` for the body as a whole.",
                    },
                    "description": {
                        "type": "string",
                        "description": "What is wrong and what the field takes.",
                    },
                },
            },
        },
    },
}
_ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "A `google.rpc.Status` rendered as JSON (AIP-193).",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message", "details"],
            "properties": {
                "code": {"type": "integer", "format": "int32", "description": "HTTP status."},
                "status": {
                    "type": "string",
                    "description": "Canonical code name, e.g. `INVALID_ARGUMENT`.",
                },
                "message": {"type": "string", "description": "What went wrong, what to do."},
                "details": {
                    "type": "array",
                    "description": "`google.rpc.ErrorInfo` (always, first) and `BadRequest` "
                    "(when fields are at fault).",
                    "items": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/google.rpc.ErrorInfo"},
                            {"$ref": "#/components/schemas/google.rpc.BadRequest"},
                        ]
                    },
                },
            },
        }
    },
}
_ERROR_REF: Schema = {"$ref": "#/components/schemas/Error"}


def default_descriptor_set() -> bytes | None:
    """The generated `assetwithdrawal/descriptors.binpb` (with source info), if installed."""
    try:
        return (
            importlib.resources.files("assetwithdrawal").joinpath("descriptors.binpb").read_bytes()
        )
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None


def load_comments(descriptor_set: bytes | None) -> dict[str, str]:
    """Leading proto comments keyed by full name (fields and enum values: `Parent.name`)."""
    if not descriptor_set:
        return {}
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    except DecodeError:
        logger.warning("OpenAPI: the descriptor set does not parse; no descriptions")
        return {}
    out: dict[str, str] = {}
    for file in files.file:
        comments = {
            tuple(loc.path): loc.leading_comments
            for loc in file.source_code_info.location
            if loc.leading_comments
        }

        def put(name: str, path: tuple[int, ...], comments: dict[tuple[int, ...], str]) -> None:
            text = comments.get(path)
            if text:
                out[name] = textwrap.dedent(text).strip()

        def enum(
            e: descriptor_pb2.EnumDescriptorProto,
            scope: str,
            path: tuple[int, ...],
            comments: dict[tuple[int, ...], str],
        ) -> None:
            name = f"{scope}.{e.name}" if scope else e.name
            put(name, path, comments)
            for i, value in enumerate(e.value):
                put(f"{name}.{value.name}", (*path, 2, i), comments)

        def message(
            m: descriptor_pb2.DescriptorProto,
            scope: str,
            path: tuple[int, ...],
            comments: dict[tuple[int, ...], str],
        ) -> None:
            name = f"{scope}.{m.name}" if scope else m.name
            put(name, path, comments)
            for i, f in enumerate(m.field):
                put(f"{name}.{f.name}", (*path, 2, i), comments)
            for i, nested in enumerate(m.nested_type):
                message(nested, name, (*path, 3, i), comments)
            for i, e in enumerate(m.enum_type):
                enum(e, name, (*path, 4, i), comments)

        for i, m in enumerate(file.message_type):
            message(m, file.package, (4, i), comments)
        for i, e in enumerate(file.enum_type):
            enum(e, file.package, (5, i), comments)
        for i, s in enumerate(file.service):
            service = f"{file.package}.{s.name}" if file.package else s.name
            put(service, (6, i), comments)
            for j, method in enumerate(s.method):
                put(f"{service}.{method.name}", (6, i, 2, j), comments)
    return out


def _field_key(fd: FieldDescriptor) -> str:
    """How `load_comments` keys a field: `package.Message.field`."""
    parent = fd.containing_type
    return f"{parent.full_name}.{fd.name}" if parent is not None else fd.full_name


def _behaviors(fd: FieldDescriptor) -> set[int]:
    return set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])


_READ_ONLY = frozenset({field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER})


def _with_extras(schema: Schema, **extras: Any) -> Schema:
    """Add description/readOnly to a schema; a `$ref` is wrapped in allOf (OpenAPI 3.0)."""
    extras = {k: v for k, v in extras.items() if v}
    if not extras:
        return schema
    if "$ref" in schema:
        return {"allOf": [schema], **extras}
    return {**schema, **extras}


class _Schemas:
    """components.schemas, filled on demand while walking messages and enums."""

    def __init__(
        self,
        comments: dict[str, str],
        formats: Mapping[str, FieldFormat],
        non_negative: frozenset[str] = NON_NEGATIVE_FIELDS,
    ) -> None:
        self.comments = comments
        self.formats = formats
        self.non_negative = non_negative
        self.components: dict[str, Schema] = {}

    def message_ref(self, desc: Descriptor) -> Schema:
        known = _WELL_KNOWN.get(desc.full_name)
        if known is not None:
            return dict(known)
        wrapped = _WRAPPERS.get(desc.full_name)
        if wrapped is not None:
            return {**_SCALARS[wrapped], "nullable": True}
        if desc.full_name not in self.components:
            self.components[desc.full_name] = {}  # placeholder: recursive messages
            self.components[desc.full_name] = self.message_schema(desc)
        return {"$ref": f"#/components/schemas/{desc.full_name}"}

    def enum_ref(self, desc: EnumDescriptor) -> Schema:
        if desc.full_name not in self.components:
            lines = [self.comments.get(desc.full_name, "")]
            for value in desc.values:
                doc = self.comments.get(f"{desc.full_name}.{value.name}")
                lines.append(f"- `{value.name}`: {doc}" if doc else f"- `{value.name}`")
            self.components[desc.full_name] = {
                "type": "string",
                "enum": [v.name for v in desc.values],
                "description": "\n".join(line for line in lines if line),
            }
        return {"$ref": f"#/components/schemas/{desc.full_name}"}

    def message_schema(self, desc: Descriptor, exclude: frozenset[str] = frozenset()) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for fd in desc.fields:
            if fd.name in exclude:
                continue
            properties[fd.json_name] = self.field(fd)
            if field_behavior_pb2.REQUIRED in _behaviors(fd):
                required.append(fd.json_name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        doc = self.comments.get(desc.full_name)
        if doc:
            schema["description"] = doc
        return schema

    def single(self, fd: FieldDescriptor) -> Schema:
        """The schema of one value of the field (ignoring repeated)."""
        if fd.enum_type is not None:
            return self.enum_ref(fd.enum_type)
        if fd.message_type is not None:
            return self.message_ref(fd.message_type)
        schema = dict(_SCALARS[fd.type])
        fmt = self.formats.get(fd.full_name)
        if fmt is not None and fd.type == FieldDescriptor.TYPE_STRING:
            schema.update(pattern=fmt.pattern, example=fmt.example)
        if schema.get("format") in ("int64", "uint64") and schema["type"] == "string":
            # proto3 JSON writes 64-bit integers as strings of digits.
            unsigned = schema["format"] == "uint64" or fd.full_name in self.non_negative
            schema["pattern"] = r"^[0-9]+$" if unsigned else r"^-?[0-9]+$"
        elif fd.full_name in self.non_negative:
            schema["minimum"] = 0
        return schema

    def field(self, fd: FieldDescriptor) -> Schema:
        if is_map_field(fd) and fd.message_type is not None:
            value = fd.message_type.fields_by_name["value"]
            schema: Schema = {"type": "object", "additionalProperties": self.single(value)}
        elif fd.is_repeated:
            schema = {"type": "array", "items": self.single(fd)}
        else:
            schema = self.single(fd)
        behaviors = _behaviors(fd)
        if schema.get("type") == "string" and fd.type == FieldDescriptor.TYPE_STRING:
            if field_behavior_pb2.REQUIRED in behaviors:
                # proto3 cannot tell an empty string from a missing one: both are refused.
                schema["minLength"] = 1
            elif "pattern" in schema and not re.search(schema["pattern"], ""):
                # Responses print every field, an unset one as "" (e.g. `fee` until mined).
                schema["pattern"] = f"^$|{schema['pattern']}"
        return _with_extras(
            schema,
            description=self.comments.get(_field_key(fd)),
            readOnly=bool(_READ_ONLY & behaviors),
        )


def _summary(doc: str) -> str:
    """The first sentence of a comment, on one line."""
    text = " ".join(doc.split())
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 1:
        return word[:-1]
    return word


def _openapi_path(template: PathTemplate) -> tuple[str, list[tuple[str, str, str, str]]]:
    """`/v1/{name=withdrawals/*}:cancel` -> `/v1/withdrawals/{withdrawal}:cancel`.

    Returns the path and its parameters as (parameter, variable, description, collection):
    each `*` of a multi-segment variable becomes its own parameter, so clients never encode a
    '/'; `collection` is the literal segment before it (`withdrawals`), or "".
    """
    parts: list[str] = []
    params: list[tuple[str, str, str, str]] = []
    used: set[str] = set()

    def fresh(name: str) -> str:
        candidate, n = name, 2
        while candidate in used:
            candidate, n = f"{name}{n}", n + 1
        used.add(candidate)
        return candidate

    for seg in template.segments:
        var = seg.variable
        if var is None:
            parts.append(seg.literal or "")
            continue
        if var.segments in (("*",), ("**",)):
            param = fresh(var.field_path.replace(".", "_"))
            note = " It may contain '/'." if var.segments == ("**",) else ""
            params.append((param, var.field_path, f"The `{var.field_path}` field.{note}", ""))
            parts.append(f"{{{param}}}")
            continue
        shape = "/".join(var.segments)
        for i, piece in enumerate(var.segments):
            if piece in ("*", "**"):
                before = var.segments[i - 1] if i > 0 else ""
                base = _singular(before) if before and before not in ("*", "**") else ""
                param = fresh(base or f"{var.field_path.replace('.', '_')}_{i}")
                params.append(
                    (
                        param,
                        var.field_path,
                        f"Part of the `{var.field_path}` field: `{shape}`.",
                        before if before not in ("*", "**") else "",
                    )
                )
                parts.append(f"{{{param}}}")
            else:
                parts.append(piece)
    return "/" + "/".join(parts) + (f":{template.verb}" if template.verb else ""), params


def _operation(
    method: MethodDescriptor,
    rb: RuleBinding,
    operation_id: str,
    schemas: _Schemas,
    errors: Sequence[ErrorReason],
    example: OperationExample | None,
    segment_formats: Mapping[str, FieldFormat] = SEGMENT_FORMATS,
) -> tuple[str, Schema]:
    request = method.input_type
    path, path_params = _openapi_path(rb.template)
    doc = schemas.comments.get(method.full_name, "")
    operation: Schema = {
        "operationId": operation_id,
        "tags": [method.containing_service.name],
        "summary": _summary(doc) or method.name,
    }
    if doc:
        operation["description"] = doc
    parameters: list[Schema] = []
    bound: set[str] = set()
    for param, field_path, description, collection in path_params:
        bound.add(field_path)
        resolved = resolve_field(request, field_path)
        param_schema = schemas.single(resolved[-1])
        segment = segment_formats.get(collection)
        if segment is not None and param_schema.get("type") == "string":
            param_schema = {**param_schema, "pattern": segment.pattern, "example": segment.example}
        parameters.append(
            {
                "name": param,
                "in": "path",
                "required": True,
                "description": description,
                "schema": param_schema,
            }
        )
    request_id = request.fields_by_name.get(_REQUEST_ID)
    has_key = request_id is not None and request_id.type == FieldDescriptor.TYPE_STRING
    if rb.body != "*":
        # The header is how REST gives the idempotency key; the `request_id` query parameter
        # (also accepted) is described in the header's text rather than listed.
        excluded = bound | ({rb.body} if rb.body else set()) | ({_REQUEST_ID} if has_key else set())
        for dotted, fields in query_fields(request, excluded).items():
            parameters.append(_query_parameter(dotted, fields, schemas))
    if request_id is not None and has_key:
        parameters.append(_idempotency_header(request_id, rb, schemas))
    if parameters:
        operation["parameters"] = parameters
    if rb.body:
        operation["requestBody"] = _request_body(request, rb.body, bound, schemas, example)
    output = schemas.message_ref(method.output_type)
    if method.server_streaming:
        ok = {
            "description": "A stream of messages, one JSON object per line; an error after "
            'the stream started arrives as a last line `{"error": {...}}`.',
            "content": {NDJSON: {"schema": output}},
        }
    else:
        media: Schema = {"schema": output}
        if example is not None:
            media["example"] = example.response
        ok = {"description": "OK", "content": {"application/json": media}}
    operation["responses"] = {
        "200": ok,
        **error_responses(errors),
        "default": {"$ref": "#/components/responses/Error"},
    }
    return path, operation


def _request_body(
    request: Descriptor,
    body: str,
    bound: set[str],
    schemas: _Schemas,
    example: OperationExample | None,
) -> Schema:
    if body == "*":
        body_schema = schemas.message_schema(request, exclude=frozenset(bound))
        required = False
    else:
        body_field = request.fields_by_name[body]
        body_schema = schemas.field(body_field)
        required = field_behavior_pb2.REQUIRED in _behaviors(body_field)
    media: Schema = {"schema": body_schema}
    if example is not None:
        media["example"] = example.request
    return {"required": required, "content": {"application/json": media}}


def _idempotency_header(request_id: FieldDescriptor, rb: RuleBinding, schemas: _Schemas) -> Schema:
    """The `Idempotency-Key` header: required when `request_id` is, unless the body has it."""
    required = field_behavior_pb2.REQUIRED in _behaviors(request_id) and rb.body != "*"
    schema: Schema = {"type": "string"}
    fmt = schemas.formats.get(request_id.full_name)
    if fmt is not None:
        schema.update(pattern=fmt.pattern, example=fmt.example)
    alternative = (
        f"the body's `{request_id.json_name}`"
        if rb.body == "*"
        else f"a `{_REQUEST_ID}` query parameter (for clients that cannot set headers)"
    )
    return {
        "name": _IDEMPOTENCY_HEADER,
        "in": "header",
        "required": required,
        "description": (
            f"The idempotency key (the request's `{_REQUEST_ID}`), unique per partner and "
            "never expiring; a UUID is a good choice. A repeat with the same key and body "
            "answers the original result; the same key with another body is 409 "
            f"`IDEMPOTENCY_KEY_REUSED`. Without it the request is 400, unless {alternative} "
            "gives the key; if both are given they must be equal."
        ),
        "schema": schema,
    }


def error_responses(errors: Sequence[ErrorReason]) -> dict[str, Schema]:
    """One response per HTTP status, listing its reasons, with an example body each."""
    by_status: dict[int, list[ErrorReason]] = {}
    for reason in errors:
        by_status.setdefault(reason.status, []).append(reason)
    responses: dict[str, Schema] = {}
    for status in sorted(by_status):
        reasons = by_status[status]
        lines = [f"- `{r.reason}` ({r.code.name}): {r.summary}" for r in reasons]
        examples = {r.reason: {"summary": r.summary, "value": error_example(r)} for r in reasons}
        responses[str(status)] = {
            "description": "ErrorInfo reasons:\n" + "\n".join(lines),
            "content": {"application/json": {"schema": _ERROR_REF, "examples": examples}},
        }
    return responses


def error_example(reason: ErrorReason) -> dict[str, Any]:
    """The JSON error body the gateway answers for `reason.example_error()`."""
    body = status_to_json(reason.example_error().to_status())
    body["error"]["code"] = reason.status
    return body


def _query_parameter(dotted: str, fields: FieldPath, schemas: _Schemas) -> Schema:
    leaf = fields[-1]
    schema = schemas.single(leaf)
    param: Schema = {"name": dotted, "in": "query", "required": False}
    if leaf.is_repeated:
        param.update(style="form", explode=True)
        schema = {"type": "array", "items": schema}
    doc = schemas.comments.get(_field_key(leaf))
    if doc:
        param["description"] = doc
    param["schema"] = schema
    return param


def build_openapi(
    services: Sequence[ServiceDescriptor],
    *,
    title: str,
    version: str,
    source_descriptor_set: bytes | None = None,
    errors: Mapping[str, Sequence[ErrorReason]] = METHOD_ERRORS,
    field_formats: Mapping[str, FieldFormat] = FIELD_FORMATS,
    examples: Mapping[str, OperationExample] = OPERATION_EXAMPLES,
    server_url: str = "/",
    segment_formats: Mapping[str, FieldFormat] = SEGMENT_FORMATS,
    non_negative: frozenset[str] = NON_NEGATIVE_FIELDS,
) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document for every HTTP rule of `services` (a JSON-ready dict).

    `errors`, `field_formats` and `examples` are keyed by method and field full names (the
    defaults: the WithdrawalService's); `server_url` is the `servers` entry, relative `/` (the
    origin serving the document) unless a base URL is given. `segment_formats` gives the
    pattern of a path parameter by the collection before it; `non_negative` names the
    integer fields that refuse negative values.
    """
    comments = load_comments(source_descriptor_set)
    schemas = _Schemas(comments, field_formats, non_negative)
    paths: dict[str, dict[str, Schema]] = {}
    tags: list[Schema] = []
    used_ids: set[str] = set()
    for service in services:
        tag: Schema = {"name": service.name}
        if service.full_name in comments:
            tag["description"] = comments[service.full_name]
        tags.append(tag)
        for method in service.methods:
            rule = http_rule_of(method)
            if rule is None or method.client_streaming:
                continue
            for rb in rule_bindings(rule):
                operation_id = method.name
                if operation_id in used_ids:
                    operation_id = f"{service.name}_{method.name}"
                n = 2
                while operation_id in used_ids:
                    operation_id, n = f"{method.name}{n}", n + 1
                used_ids.add(operation_id)
                path, operation = _operation(
                    method,
                    rb,
                    operation_id,
                    schemas,
                    errors.get(method.full_name, ()),
                    examples.get(method.full_name),
                    segment_formats,
                )
                paths.setdefault(path, {})[rb.http_method.lower()] = operation
    schemas.components["Error"] = _ERROR_SCHEMA
    schemas.components["google.rpc.ErrorInfo"] = _ERROR_INFO_SCHEMA
    schemas.components["google.rpc.BadRequest"] = _BAD_REQUEST_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "servers": [{"url": server_url}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Error": {
                    "description": "An error, with the matching HTTP status.",
                    "content": {
                        "application/json": {
                            "schema": _ERROR_REF,
                            "example": error_example(INTERNAL),
                        }
                    },
                }
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <api key>`.",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }
