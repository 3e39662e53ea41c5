"""REST/JSON -> protobuf transcoding for the gateway, driven only by `google.api.http` rules.

`build_rest_app(bindings)` returns an aiohttp application with one catch-all handler that
routes on the HttpRule path templates of every bound service, builds the request message from
path variables, query parameters, the body and the `Idempotency-Key` header, calls the bound
invoker, and renders the proto3 JSON response (NDJSON for server streaming) or a
`google.rpc.Status` JSON error. Routes, field maps and message classes are computed once, at
build time. It never authenticates by itself: a binding's `authenticate` (when given) is called
with the request headers before anything of the request is read, so a caller without valid
credentials learns nothing about its input (401, never a 400 about a field); the invoker gets
the headers as metadata too.

Errors name fields as the REST caller did: the JSON body is checked by `json_body` before
json_format parses it (violations at the caller's JSON paths; `body` for the body as a
whole), query parameters by the name sent, and the proto paths of the invoker's violations
are translated (`_CallerNames`: `withdrawal.recipient_address` -> `recipientAddress`,
`request_id` -> `Idempotency-Key`). A body over `max_body_bytes` is 413 BODY_TOO_LARGE.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from svc_gateway.errors import BODY_TOO_LARGE, METHOD_NOT_ALLOWED
from svc_gateway.rest.formats import FIELD_FORMATS, FieldFormat
from svc_gateway.rest.http_rule import (
    FieldPath,
    PathTemplate,
    dotted_name,
    http_rule_of,
    is_scalar_like,
    query_fields,
    resolve_field,
    rule_bindings,
)
from svc_gateway.rest.json_body import (
    INT_RANGES,
    BodyError,
    check_message,
    check_value,
    load_json,
)
from svc_gateway.rest.json_render import message_to_dict
from svc_gateway.rest.openapi import build_openapi, default_descriptor_set
from withdrawal_shared import tracing
from withdrawal_shared.errors import (
    NOT_FOUND,
    ApiError,
    FieldViolation,
    invalid_argument,
    quoted,
    status_to_json,
)
from withdrawal_shared.logs import trace_id_from_traceparent, trace_id_var
from withdrawal_shared.metrics import HTTP_SERVER_REQUEST_SECONDS, HTTP_SERVER_REQUESTS
from withdrawal_shared.unexpected import unexpected_error

logger = logging.getLogger(__name__)

UnaryInvoker = Callable[[MethodDescriptor, Message, Mapping[str, str]], Awaitable[Message]]
"""Calls a unary method: (method, request, metadata) -> response."""
StreamInvoker = Callable[[MethodDescriptor, Message, Mapping[str, str]], AsyncIterator[Message]]
"""Calls a server-streaming method: (method, request, metadata) -> async iterator of responses."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
BODY = "body"
"""How violations name the request body as a whole."""
REQUEST_ID_FIELD = "request_id"
NDJSON = "application/x-ndjson"

# Headers that describe the HTTP connection, not the call; never passed on as metadata.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class RestBinding:
    """A service served over REST and the callables that reach its implementation.

    `invoke_stream` is required when the service has server-streaming methods with HTTP rules.
    `authenticate`, when given, checks the request headers (lowercase names) first and raises
    an `ApiError` (UNAUTHENTICATED) to refuse the request before its input is validated.
    """

    service: ServiceDescriptor
    invoke: UnaryInvoker
    invoke_stream: StreamInvoker | None = None
    authenticate: Callable[[Mapping[str, str]], Awaitable[object]] | None = None


@dataclass(frozen=True)
class _Route:
    """One HTTP method + path template bound to one RPC, with everything precomputed."""

    http_method: str
    template: PathTemplate
    method: MethodDescriptor
    request_class: type[Message]
    path_fields: Mapping[str, FieldPath]  # template variable -> fields
    body_field: FieldDescriptor | None  # the `body: "field"` target
    body_all: bool  # `body: "*"`
    query: Mapping[str, FieldPath]  # parameter name (proto or JSON dot path) -> fields
    has_request_id: bool
    binding: RestBinding
    formats: Mapping[str, FieldFormat]

    @property
    def label(self) -> str:
        """The route as metrics name it: `POST /v1/withdrawals`, the template, no values."""
        return f"{self.http_method} {self.template.template}"

    @property
    def body_message(self) -> Descriptor | None:
        """The body field's message type when the body is one (non well-known) message."""
        field = self.body_field
        if field is None or field.is_repeated or field.message_type is None:
            return None
        if field.message_type.full_name.startswith("google.protobuf."):
            return None
        return field.message_type


class _BadInput(Exception):
    """Internal: collected field violations, turned into one INVALID_ARGUMENT."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__(violations)
        self.violations = violations


class _MethodNotAllowed(Exception):
    """Internal: the path matches a route, but not with this HTTP method."""

    def __init__(self, http_method: str, path: str, allowed: list[str]) -> None:
        super().__init__(http_method, path)
        self.error = _method_not_allowed(http_method, path, allowed)
        self.allowed = allowed


# ---------------------------------------------------------------- build time


def _routes_for(binding: RestBinding, formats: Mapping[str, FieldFormat]) -> list[_Route]:
    routes: list[_Route] = []
    for method in binding.service.methods:
        rule = http_rule_of(method)
        if rule is None:
            continue
        if method.client_streaming:
            # Not transcoded: an explicit route serves it (CreateBatch: `rest/upload.py`).
            logger.debug("REST: no transcoded route for client-streaming %s", method.full_name)
            continue
        if method.server_streaming and binding.invoke_stream is None:
            raise ValueError(f"{method.full_name} is server-streaming: give invoke_stream")
        request_desc = method.input_type
        for rb in rule_bindings(rule):
            path_fields: dict[str, FieldPath] = {}
            for var in rb.template.variables:
                path = resolve_field(request_desc, var.field_path)
                if not is_scalar_like(path[-1]) or path[-1].is_repeated:
                    raise ValueError(f"{method.full_name}: {var.field_path} is not a scalar field")
                path_fields[var.field_path] = path
            body_field: FieldDescriptor | None = None
            if rb.body and rb.body != "*":
                found = request_desc.fields_by_name.get(rb.body)
                if found is None:
                    raise ValueError(f"{method.full_name}: no body field {rb.body!r}")
                body_field = found
            query: dict[str, FieldPath] = {}
            if rb.body != "*":
                excluded = set(path_fields)
                if body_field is not None:
                    excluded.add(body_field.name)
                for dotted, path in query_fields(request_desc, excluded).items():
                    query[dotted] = path
                    query.setdefault(".".join(fd.json_name for fd in path), path)
            request_id = request_desc.fields_by_name.get(REQUEST_ID_FIELD)
            routes.append(
                _Route(
                    http_method=rb.http_method,
                    template=rb.template,
                    method=method,
                    request_class=message_factory.GetMessageClass(request_desc),
                    path_fields=path_fields,
                    body_field=body_field,
                    body_all=rb.body == "*",
                    query=query,
                    has_request_id=request_id is not None
                    and request_id.type == FieldDescriptor.TYPE_STRING
                    and not request_id.is_repeated,
                    binding=binding,
                    formats=formats,
                )
            )
    return routes


# ---------------------------------------------------------------- request -> message

_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z")


def _parse_int(fd: FieldDescriptor, text: str) -> int:
    if not _INT_TEXT.match(text):
        raise ValueError(f"must be an integer, got {quoted(text)}")
    low, high = INT_RANGES[fd.type]
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}, got {text}")
    return value


def _parse_bool(fd: FieldDescriptor, text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise ValueError(f"must be true or false, got {quoted(text)}")
    return lowered in ("true", "1")


def _parse_float(fd: FieldDescriptor, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {quoted(text)}") from None


def _parse_enum(fd: FieldDescriptor, text: str) -> int:
    enum = fd.enum_type
    assert enum is not None
    by_name = enum.values_by_name.get(text)
    if by_name is not None:
        return by_name.number
    if _INT_TEXT.match(text) and int(text) in enum.values_by_number:
        return int(text)
    names = ", ".join(v.name for v in enum.values)
    raise ValueError(f"must be one of {names}, got {quoted(text)}")


def _parse_bytes(fd: FieldDescriptor, text: str) -> bytes:
    try:
        padded = text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except ValueError:
        raise ValueError("must be base64") from None


_PARSERS: dict[int, Callable[[FieldDescriptor, str], Any]] = {
    **dict.fromkeys(INT_RANGES, _parse_int),
    FieldDescriptor.TYPE_STRING: lambda fd, text: text,
    FieldDescriptor.TYPE_BOOL: _parse_bool,
    FieldDescriptor.TYPE_DOUBLE: _parse_float,
    FieldDescriptor.TYPE_FLOAT: _parse_float,
    FieldDescriptor.TYPE_ENUM: _parse_enum,
    FieldDescriptor.TYPE_BYTES: _parse_bytes,
}


def _parse_scalar(fd: FieldDescriptor, text: str) -> Any:
    """Convert one string to the field's value; ValueError with a client-facing description."""
    parser = _PARSERS.get(fd.type)
    if parser is None:  # pragma: no cover - groups and messages never get here
        raise ValueError("cannot be set from a string")
    return parser(fd, text)


def _assign(message: Message, path: FieldPath, values: Sequence[str]) -> None:
    """Set the field at `path` from string values (repeated fields take them all)."""
    target = message
    for fd in path[:-1]:
        target = getattr(target, fd.name)
    leaf = path[-1]
    if leaf.is_repeated:
        getattr(target, leaf.name).extend(_parse_scalar(leaf, v) for v in values)
        return
    if len(values) > 1:
        raise ValueError("is given more than once")
    if leaf.message_type is None:
        setattr(target, leaf.name, _parse_scalar(leaf, values[0]))
        return
    sub = getattr(target, leaf.name)
    value_field = leaf.message_type.fields_by_name.get("value")
    if leaf.message_type.full_name.endswith("Value") and value_field is not None:
        sub.value = _parse_scalar(value_field, values[0])  # a wrapper type
        return
    problems = check_value(leaf, values[0], "", {})  # Timestamp, Duration, FieldMask
    if problems:
        raise ValueError(problems[0].description)
    json_format.Parse(json.dumps(values[0]), sub)


def _current(message: Message, path: FieldPath) -> Any:
    target: Any = message
    for fd in path:
        target = getattr(target, fd.name)
    return target


def _apply_path(route: _Route, message: Message, variables: Mapping[str, str]) -> None:
    violations: list[FieldViolation] = []
    for var, raw in variables.items():
        path = route.path_fields[var]
        leaf = path[-1]
        try:
            before = _current(message, path)
            if leaf.message_type is not None:
                if before.ByteSize():
                    raise ValueError("is given both in the URL path and in the body")
                _assign(message, path, [raw])
                continue
            value = _parse_scalar(leaf, raw)
            if before and before != value:
                shown = quoted(before) if isinstance(before, str) else repr(before)
                raise ValueError(f"is {shown} in the body but {quoted(raw)} in the URL path")
            _assign(message, path, [raw])
        except ValueError as err:
            violations.append(FieldViolation(var, str(err)))
    if violations:
        raise _BadInput(violations)


def _apply_query(
    route: _Route, message: Message, query: Mapping[str, list[str]], sent: dict[str, str]
) -> None:
    """Set the fields of the query parameters; `sent` gets proto path -> parameter as sent."""
    violations: list[FieldViolation] = []
    for param, values in query.items():
        path = route.query.get(param)
        if path is None:
            reason = (
                "is not a query parameter of this method"
                if not route.body_all
                else "is not accepted: this method takes its fields from the body"
            )
            violations.append(FieldViolation(param, reason))
            continue
        sent[dotted_name(path)] = param
        try:
            _assign(message, path, values)
        except ValueError as err:
            violations.append(FieldViolation(param, str(err)))
    if violations:
        raise _BadInput(violations)


def _parse_body(route: _Route, message: Message, raw: bytes) -> dict[str, str]:
    """Merge the JSON body into `message` per the rule's `body`.

    Violations name fields by their JSON path in the body, as the caller wrote them; the
    body itself is `body`. Returns, for fields the caller named by their proto name, proto
    path (from the request) -> the caller's path.
    """
    if not raw.strip():
        return {}
    try:
        data = load_json(raw, BODY)
    except BodyError as err:
        raise _BadInput(err.violations) from None
    field = route.body_field
    prefix = ""
    if field is None:
        if not isinstance(data, dict):
            raise _BadInput([FieldViolation(BODY, "must be a JSON object")])
        violations, spelled = check_message(data, route.method.input_type, route.formats)
        document: Any = data
    elif route.body_message is not None:
        if not isinstance(data, dict):
            raise _BadInput([FieldViolation(BODY, "must be a JSON object")])
        violations, spelled = check_message(data, route.body_message, route.formats)
        prefix = field.name + "."
        document = {field.json_name: data}
    else:
        violations, spelled = check_value(field, data, BODY, route.formats), {}
        document = {field.json_name: data}
    if violations:
        raise _BadInput(violations)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as err:
        # check_message accepts only what json_format parses; this is a gap in it.
        logger.warning("REST: a body passed the checks but json_format refused it: %s", err)
        raise _BadInput([FieldViolation(BODY, "does not fit the request message")]) from None
    return {prefix + proto: path for proto, path in spelled.items()}


def _too_large(limit: int) -> ApiError:
    return BODY_TOO_LARGE.error(
        f"The request body is larger than the limit of {limit} bytes; send a smaller one.",
        [FieldViolation(BODY, f"is larger than {limit} bytes")],
        metadata={"limit_bytes": str(limit)},
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body; ApiError BODY_TOO_LARGE (HTTP 413) past `limit` bytes, by
    Content-Length or while reading a chunked body."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(.*)\Z")


def json_path(root: Descriptor, proto_path: str) -> str:
    """`withdrawal.recipient_address` -> `withdrawal.recipientAddress`, via the descriptors.

    Index suffixes (`items[2]`) are kept; segments that name no field (map keys) are kept.
    """
    names: list[str] = []
    desc: Descriptor | None = root
    for segment in proto_path.split("."):
        match = _SEGMENT.match(segment)
        fd = desc.fields_by_name.get(match.group(1)) if desc is not None and match else None
        if fd is None or match is None:
            names.append(segment)
            desc = None
            continue
        names.append(fd.json_name + match.group(2))
        desc = fd.message_type
        if desc is not None and desc.GetOptions().map_entry:
            desc = None
    return ".".join(names)


@dataclass
class _CallerNames:
    """How the caller of one REST request named its fields, so that the violations of the
    core (proto paths from the request message, as gRPC shows them) name them the same way.

    - `request_id` is `Idempotency-Key`, unless it came only from a query parameter (or
      the body, with `body: "*"`);
    - a query parameter is named as sent (`page_size` or `pageSize`);
    - a field of the body is its JSON path in the body (`recipientAddress`), or the key the
      caller used for it; the body field itself is `body`;
    - a path variable keeps its template name (`name`).
    """

    route: _Route
    query: dict[str, str] = field(default_factory=dict)  # proto path -> parameter as sent
    spelled: dict[str, str] = field(default_factory=dict)  # proto path -> body key as sent
    header: bool = False  # request_id came from the Idempotency-Key header

    def rest_name(self, proto_path: str) -> str:
        route = self.route
        if (
            route.has_request_id
            and proto_path == REQUEST_ID_FIELD
            and (self.header or (proto_path not in self.query and not route.body_all))
        ):
            return IDEMPOTENCY_HEADER
        for names in (self.query, self.spelled):
            found = names.get(proto_path)
            if found is not None:
                return found
        if proto_path in route.path_fields:
            return proto_path
        body_field = route.body_field
        if body_field is not None:
            if proto_path == body_field.name:
                return BODY
            prefix = body_field.name + "."
            if proto_path.startswith(prefix) and body_field.message_type is not None:
                return json_path(body_field.message_type, proto_path[len(prefix) :])
        return json_path(route.method.input_type, proto_path)


# ---------------------------------------------------------------- responses


def message_to_json_bytes(message: Message) -> bytes:
    """proto3 JSON (lowerCamelCase), with every no-presence field printed."""
    data = message_to_dict(message)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(err: ApiError) -> bytes:
    body = status_to_json(err.to_status())
    if err.http_status is not None:
        body["error"]["code"] = err.http_status
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _json_response(body: bytes, status: int, trace_id: str) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        headers={"x-trace-id": trace_id, "cache-control": "no-store"},
    )


def _error_response(err: ApiError, trace_id: str) -> web.Response:
    status = err.http_status if err.http_status is not None else err.code.http_status
    response = _json_response(_error_body(err), status, trace_id)
    response.headers.update(err.headers)
    return response


def _route_not_found(path: str) -> ApiError:
    return NOT_FOUND.error(
        f"No REST endpoint matches the path {path}. The API is described at /openapi.json.",
        metadata={"path": path},
    )


def _method_not_allowed(http_method: str, path: str, allowed: Sequence[str]) -> ApiError:
    return METHOD_NOT_ALLOWED.error(
        f"{http_method} is not allowed on {path}; use {', '.join(allowed)}.",
        metadata={"method": http_method, "allowed": ", ".join(allowed)},
    )


# ---------------------------------------------------------------- the handler


class RestTranscoder:
    """The precomputed routing table and the aiohttp handler that serves it."""

    def __init__(
        self,
        bindings: Sequence[RestBinding],
        *,
        max_body_bytes: int = 65536,
        openapi: Mapping[str, Any] | None = None,
        field_formats: Mapping[str, FieldFormat] = FIELD_FORMATS,
    ) -> None:
        routes = [route for binding in bindings for route in _routes_for(binding, field_formats)]
        # Custom-verb templates (`:cancel`) are tried first, then the more literal ones.
        routes.sort(key=lambda r: (r.template.verb is None, -r.template.literal_count))
        self._verb_routes = [r for r in routes if r.template.verb is not None]
        self._plain_routes = [r for r in routes if r.template.verb is None]
        self._max_body = max_body_bytes
        if openapi is None:
            openapi = build_openapi(
                [b.service for b in bindings],
                title="Asset Withdrawal API",
                version="v1",
                source_descriptor_set=default_descriptor_set(),
            )
        self._openapi_body = json.dumps(openapi, ensure_ascii=False).encode()
        # Every route's success series exists from the start (RED metrics).
        for label in [r.label for r in routes] + ["GET /openapi.json", "GET /healthz"]:
            HTTP_SERVER_REQUESTS.add(0, {"route": label, "code": "200"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request, counted and timed by route and status (RED metrics)."""
        started = time.perf_counter()
        if tracing.enabled():
            response = await tracing.traced_http(
                request, self._serve, lambda r: str(r.get(_ROUTE_LABEL, _UNMATCHED))
            )
        else:
            response = await self._serve(request)
        route = request.get(_ROUTE_LABEL, _UNMATCHED)
        HTTP_SERVER_REQUEST_SECONDS.record(time.perf_counter() - started, {"route": route})
        HTTP_SERVER_REQUESTS.add(1, {"route": route, "code": str(response.status)})
        return response

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        """Serve one request; sets `trace_id_var` for its duration (the span's trace id when
        tracing is on)."""
        ids = tracing.current_ids()
        trace_id = ids[0] if ids else trace_id_from_traceparent(request.headers.get("traceparent"))
        token = trace_id_var.set(trace_id)
        try:
            return await self._handle(request, trace_id)
        except ApiError as err:
            return _error_response(err, trace_id)
        except _BadInput as bad:
            return _error_response(invalid_argument(bad.violations), trace_id)
        except _MethodNotAllowed as wrong:
            response = _error_response(wrong.error, trace_id)
            response.headers["Allow"] = ", ".join(wrong.allowed)
            return response
        except Exception as exc:
            where = f"REST {request.method} {request.rel_url.raw_path}"
            return _error_response(unexpected_error(exc, trace_id, where), trace_id)
        finally:
            trace_id_var.reset(token)

    async def _handle(self, request: web.Request, trace_id: str) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path in ("/openapi.json", "/healthz"):
            request[_ROUTE_LABEL] = f"GET {path}"
            if request.method not in ("GET", "HEAD"):
                raise _MethodNotAllowed(request.method, path, ["GET"])
            body = self._openapi_body if path == "/openapi.json" else b'{"status":"SERVING"}'
            return _json_response(body, 200, trace_id)
        route, variables = self._find(request.method, path, trace_id)
        request[_ROUTE_LABEL] = route.label
        metadata = {
            k.lower(): v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        }
        if route.binding.authenticate is not None:
            await route.binding.authenticate(metadata)
        names = _CallerNames(route)
        message = await self._build_request(request, route, variables, names)
        try:
            if route.method.server_streaming:
                return await self._stream(request, route, message, metadata, trace_id, names)
            response = await route.binding.invoke(route.method, message, metadata)
        except ApiError as err:
            raise err.with_field_names(names.rest_name) from None
        return _json_response(message_to_json_bytes(response), 200, trace_id)

    def _find(self, http_method: str, path: str, trace_id: str) -> tuple[_Route, dict[str, str]]:
        for group in (self._verb_routes, self._plain_routes):
            allowed: list[str] = []
            for route in group:
                variables = route.template.match(path)
                if variables is None:
                    continue
                if route.http_method == http_method:
                    return route, variables
                if route.http_method not in allowed:
                    allowed.append(route.http_method)
            if allowed:
                raise _MethodNotAllowed(http_method, path, allowed)
        raise _route_not_found(path)

    async def _build_request(
        self,
        request: web.Request,
        route: _Route,
        variables: Mapping[str, str],
        names: _CallerNames,
    ) -> Message:
        """The request message; `names` learns how the caller named its fields."""
        message = route.request_class()
        if route.body_field is not None or route.body_all:
            raw = await _read_body(request, self._max_body)
            names.spelled = _parse_body(route, message, raw)
        elif request.content_length or request.body_exists:
            raw = await _read_body(request, self._max_body)
            if raw.strip():
                raise _BadInput([FieldViolation(BODY, "this method takes no request body")])
        query: dict[str, list[str]] = {}
        for key, value in request.rel_url.query.items():
            query.setdefault(key, []).append(value)
        if query:
            _apply_query(route, message, query, names.query)
        _apply_path(route, message, variables)
        if route.has_request_id:
            header = request.headers.get(IDEMPOTENCY_HEADER, "")
            if header:
                current: str = getattr(message, REQUEST_ID_FIELD)
                if current and current != header:
                    given = names.query.get(REQUEST_ID_FIELD) or names.spelled.get(
                        REQUEST_ID_FIELD, json_path(route.method.input_type, REQUEST_ID_FIELD)
                    )
                    raise _BadInput(
                        [
                            FieldViolation(
                                given,
                                f"differs from the {IDEMPOTENCY_HEADER} header; give one or"
                                " make them equal",
                            )
                        ]
                    )
                setattr(message, REQUEST_ID_FIELD, header)
                names.header = True
        return message

    async def _stream(
        self,
        request: web.Request,
        route: _Route,
        message: Message,
        metadata: Mapping[str, str],
        trace_id: str,
        names: _CallerNames,
    ) -> web.StreamResponse:
        invoke_stream = route.binding.invoke_stream
        assert invoke_stream is not None  # checked at build time
        iterator = aiter(invoke_stream(route.method, message, metadata))
        try:
            # The first message (or error) comes before the headers, so an immediate error
            # (unauthenticated, not found) still gets its proper HTTP status.
            first: Message | None
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                first = None
            response = web.StreamResponse(
                status=200, headers={"x-trace-id": trace_id, "cache-control": "no-store"}
            )
            response.content_type = NDJSON
            await response.prepare(request)
            try:
                if first is not None:
                    await response.write(message_to_json_bytes(first) + b"\n")
                    async for item in iterator:
                        await response.write(message_to_json_bytes(item) + b"\n")
            except ConnectionResetError:
                return response  # the client went away; the finally closes the stream
            except ApiError as err:
                await _write_final_error(response, err.with_field_names(names.rest_name))
            except Exception as exc:
                where = f"REST stream {route.method.full_name}"
                await _write_final_error(response, unexpected_error(exc, trace_id, where))
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
            return response
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _write_final_error(response: web.StreamResponse, err: ApiError) -> None:
    with contextlib.suppress(ConnectionResetError):
        await response.write(_error_body(err) + b"\n")


# ---------------------------------------------------------------- the application


_ROUTE_LABEL: web.RequestKey[str] = web.RequestKey("aws_route_label", str)
"""The request key under which `handle` finds the matched route's metrics label."""
_UNMATCHED = "unmatched"


def build_rest_app(
    bindings: Sequence[RestBinding],
    *,
    max_body_bytes: int = 65536,
    openapi: Mapping[str, Any] | None = None,
    extra_routes: Callable[[web.Application, RestTranscoder], None] | None = None,
) -> web.Application:
    """An aiohttp application serving every HTTP rule of `bindings`, plus
    `GET /openapi.json` (`openapi`, or one generated from the bindings) and `GET /healthz`.
    `extra_routes` adds routes of its own, tried before the transcoded ones.

    Raises ValueError at build time for rules that do not fit their request messages.
    """
    transcoder = RestTranscoder(bindings, max_body_bytes=max_body_bytes, openapi=openapi)
    app = web.Application(client_max_size=max_body_bytes + 1)
    app[TRANSCODER_KEY] = transcoder
    if extra_routes is not None:
        extra_routes(app, transcoder)
    # Every path, also one holding a newline (%0A decodes to one; `.` would not match it and
    # aiohttp would answer its own text/plain 404).
    app.router.add_route("*", r"/{tail:[\s\S]*}", transcoder.handle)
    return app


TRANSCODER_KEY: web.AppKey[RestTranscoder] = web.AppKey("rest_transcoder", RestTranscoder)
