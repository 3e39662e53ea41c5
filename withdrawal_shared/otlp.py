"""The OTLP/HTTP span exporter with an encoder of its own.

`OTLPSpanExporter` (the OpenTelemetry OTLP/HTTP exporter) encodes each batch with
`encode_spans(spans).SerializePartialToString()`: a protobuf message object for every span,
attribute, value and link, then their serialisation, about 20 µs of CPU for a state change
span with five attributes and one link. `encode_spans_request` writes the same
`ExportTraceServiceRequest` straight as protobuf wire bytes (the same fields, the same
grouping by resource and scope, parsed back equal to `encode_spans`' message: see
`tests/unit/test_otlp_encode.py`), with the encodings of what repeats (the resource, the
scope, attribute keys) remembered. `Exporter` is the OTLP/HTTP exporter with that encoder;
everything else (the endpoint and headers from `OTEL_EXPORTER_OTLP_*`, the HTTP client, the
request size limit, the exporter's own metrics) is the SDK's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_logger = logging.getLogger(__name__)

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack

# Span.flags (SpanFlags): the parent's is_remote is known (0x100), and it is remote (0x200).
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(0x300)
# Span.kind by SpanKind (the API's values 0..4 are OTLP's 1..5).
_KIND = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}
# Span.status (field 15) of the SDK's default, an UNSET status without description.
_STATUS_UNSET = b"\x7a\x00"


def _varint(value: int) -> bytes:
    """`value` (non-negative, or an int64 as two's complement) as a protobuf varint."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the payload's length, the payload."""
    length = len(payload)
    return tag + (bytes((length,)) if length < 0x80 else _varint(length)) + payload


def _with_schema(tag: bytes, body: bytes, schema_url: str) -> bytes:
    """A ResourceSpans or ScopeSpans field: `body`, then its `schema_url` (field 3) if any."""
    return _field(tag, body + (_field(b"\x1a", schema_url.encode()) if schema_url else b""))


_KEYS: dict[str, bytes] = {}
"""A KeyValue's key field (tag, length, UTF-8) by key: attribute keys repeat on every span."""


def _key(key: str) -> bytes:
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _field(b"\x0a", key.encode())
        if len(_KEYS) < 4096:
            _KEYS[key] = encoded
    return encoded


def _any_value(value: Any) -> bytes:
    """An AnyValue's payload, as `encode_spans` writes it (None: an empty AnyValue)."""
    if value is None:
        return b""
    # A oneof: its field is written even when zero (AnyValue tells 0 from no value).
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        # ArrayValue (AnyValue field 5) of AnyValues (its field 1).
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        # KeyValueList (AnyValue field 6) of KeyValues (its field 1).
        return _field(
            b"\x32",
            b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()),
        )
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _key(key) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a KeyValue field `tag` (one it cannot encode left out, logged)."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:  # the common case, inline: KeyValue{key, AnyValue{string_value}}
            encoded = value.encode()
            length = len(encoded)
            if length < 0x7E:
                key_value = _key(key) + b"\x12" + bytes((length + 2, 0x0A, length)) + encoded
            else:
                key_value = _key(key) + _field(b"\x12", _field(b"\x0a", encoded))
        elif kind is int and 0 <= value < 0x80:  # a small count or version
            key_value = _key(key) + bytes((0x12, 2, 0x18, value))
        else:
            try:
                key_value = _key_value(key, value)
            except Exception as error:  # as encode_spans: log, leave the attribute out
                _logger.exception("Failed to encode key %s: %s", key, error)
                continue
        length = len(key_value)
        parts.append(tag + (bytes((length,)) if length < 0x80 else _varint(length)) + key_value)
    return b"".join(parts)


def _count(tag: bytes, count: int) -> bytes:
    return tag + _varint(count) if count else b""


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    description = status.description
    if status.status_code is StatusCode.UNSET and not description:
        return _STATUS_UNSET
    code = status.status_code.value
    payload = _field(b"\x12", description.encode()) if description else b""
    if code:
        payload += b"\x18" + _varint(code)
    return _field(b"\x7a", payload)


def _trace_state(trace_state: Any) -> bytes:
    if not trace_state:
        return b""
    return _field(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode())


def _link(link: Any) -> bytes:
    context = link.context
    payload = (
        b"\x0a\x10"
        + context.trace_id.to_bytes(16, "big")
        + b"\x12\x08"
        + context.span_id.to_bytes(8, "big")
        + _attributes(b"\x22", link.attributes)
        + _count(b"\x28", link.dropped_attributes)
        + (b"\x35" + _FIXED32(0x300) if context.is_remote else b"\x35" + _FIXED32(0x100))
    )
    return _field(b"\x6a", payload)


def _event(event: Any) -> bytes:
    payload = (
        (b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
        + (_field(b"\x12", event.name.encode()) if event.name else b"")
        + _attributes(b"\x1a", event.attributes)
        + _count(b"\x20", event.dropped_attributes)
    )
    return _field(b"\x5a", payload)


def _span(span: ReadableSpan) -> bytes:
    """One Span message with its tag (ScopeSpans field 2), the fields `encode_spans` sets."""
    context = span.context
    assert context is not None
    parent = span.parent
    start, end = span.start_time, span.end_time
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
        _trace_state(context.trace_state),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent else b"",
        _field(b"\x2a", span.name.encode()) if span.name else b"",
        _KIND[span.kind],
        b"\x39" + _FIXED64(start) if start else b"",
        b"\x41" + _FIXED64(end) if end else b"",
        _attributes(b"\x4a", span.attributes),
        _count(b"\x50", span.dropped_attributes),
    ]
    events = span.events
    if events:
        parts.extend(_event(event) for event in events)
    parts.append(_count(b"\x60", span.dropped_events))
    links = span.links
    if links:
        parts.extend(_link(link) for link in links)
    parts.append(_count(b"\x70", span.dropped_links))
    parts.append(_status(span.status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return _field(b"\x12", b"".join(parts))


_RESOURCES: dict[Any, bytes] = {}
_SCOPES: dict[Any, bytes] = {}


def _resource(resource: Resource) -> bytes:
    """ResourceSpans' resource field (1) for `resource`, remembered (a process has one)."""
    encoded = _RESOURCES.get(resource)
    if encoded is None:
        encoded = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        if len(_RESOURCES) < 64:
            _RESOURCES[resource] = encoded
    return encoded


def _scope(scope: InstrumentationScope | None) -> bytes:
    """ScopeSpans' scope field (1) and, after the spans, its schema_url field (3)."""
    encoded = _SCOPES.get(scope)
    if encoded is None:
        if scope is None:
            encoded = b"\x0a\x00"
        else:
            encoded = _field(
                b"\x0a",
                (_field(b"\x0a", scope.name.encode()) if scope.name else b"")
                + (_field(b"\x12", scope.version.encode()) if scope.version else b"")
                + _attributes(b"\x1a", scope.attributes),
            )
        if len(_SCOPES) < 256:
            _SCOPES[scope] = encoded
    return encoded


def encode_spans_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised `ExportTraceServiceRequest` of `spans`, as
    `encode_spans(spans).SerializePartialToString()` parses: ResourceSpans by resource,
    ScopeSpans by instrumentation scope, each in order of first appearance."""
    grouped: dict[Any, dict[Any, list[bytes]]] = {}
    for span in spans:
        scopes = grouped.get(span.resource)
        if scopes is None:
            scopes = grouped[span.resource] = {}
        scope = span.instrumentation_scope or None
        encoded = scopes.get(scope)
        if encoded is None:
            encoded = scopes[scope] = []
        encoded.append(_span(span))
    request = []
    for resource, scopes in grouped.items():
        scope_spans = []
        for scope, encoded in scopes.items():
            schema_url = scope.schema_url if scope is not None else ""
            scope_spans.append(_with_schema(b"\x12", _scope(scope) + b"".join(encoded), schema_url))
        request.append(
            _with_schema(b"\x0a", _resource(resource) + b"".join(scope_spans), resource.schema_url)
        )
    return b"".join(request)


class Exporter(OTLPSpanExporter):
    """The OTLP/HTTP span exporter, encoding with `encode_spans_request`: the SDK's `export`
    (its request size limit, HTTP client and metrics) with the encoder replaced."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans_request(spans)
            except Exception as error:  # as the SDK's: a batch it cannot encode fails
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size"
                    " %d bytes.",
                    len(data),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds"
                    f" max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            answer = self._client.export(data)
            if not answer.success:
                result.error = answer.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: answer.status_code}
                    if answer.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
