"""`withdrawal_shared.otlp`: its encoder writes the request the SDK's `encode_spans` makes
(parsed back, the messages are equal) for spans of every shape the services make and more,
and its exporter sends that request over OTLP/HTTP."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from withdrawal_shared import otlp, tracing

RESOURCE = tracing._hashed_once(Resource.create({SERVICE_NAME: "svc-test", "n": 3}))
OTHER_RESOURCE = Resource({"service.name": "other", "f": 1.5, "b": False}, "https://schema/r")
SCOPE = InstrumentationScope("withdrawal_shared.tracing")
OTHER_SCOPE = InstrumentationScope("grpc", "0.66b2", "https://schema/s", {"a": "b"})


def _context(trace_id: int, span_id: int, *, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1))


def _spans() -> list[ReadableSpan]:
    remote = _context(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, remote=True)
    worker = _context(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    state_change = ReadableSpan(
        "withdrawal QUEUED -> SIGNED",
        context=_context(remote.trace_id, 0x1122334455667788),
        parent=remote,
        resource=RESOURCE,
        attributes={
            "withdrawal.id": "0193b5e2-7c1a-7d4e-9f00-000000000001",
            "withdrawal.from_state": "QUEUED",
            "withdrawal.to_state": "SIGNED",
            "withdrawal.version": 4,
            "withdrawal.actor": "processor",
            "withdrawal.reorged": True,
        },
        links=(Link(worker),),
        start_time=1_765_000_000_123_456_789,
        end_time=1_765_000_000_123_456_789,
        instrumentation_scope=SCOPE,
    )
    everything = ReadableSpan(
        "é every field ✓",
        context=SpanContext(
            worker.trace_id,
            0xFFFFFFFFFFFFFFFF,
            is_remote=False,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
        ),
        parent=worker,
        resource=OTHER_RESOURCE,
        attributes={
            "zero": 0,
            "negative": -5,
            "big": 2**62,
            "false": False,
            "float": 0.25,
            "float zero": 0.0,
            "empty": "",
            "bytes": b"\x00\x01",
            "strings": ("a", "b" * 200),
            "ints": [1, -2, 0],
            "bools": (True, False),
            "long": "x" * 300,
        },
        events=(
            Event("exception", {"exception.message": "boom", "n": 1}, timestamp=5),
            Event("", timestamp=7),
        ),
        links=(
            Link(remote, {"link.kind": "withdrawal", "i": 2}),
            Link(_context(1, 2)),
        ),
        kind=SpanKind.SERVER,
        status=Status(StatusCode.ERROR, "it failed"),
        start_time=10,
        end_time=20,
        instrumentation_scope=OTHER_SCOPE,
    )
    root = ReadableSpan(
        "root",
        context=_context(7, 8),
        parent=None,
        resource=RESOURCE,
        kind=SpanKind.CONSUMER,
        status=Status(StatusCode.OK),
        start_time=1,
        end_time=2,
        instrumentation_scope=None,
    )
    return [state_change, everything, root, state_change, everything]


def test_the_request_parses_equal_to_the_sdks() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(otlp.encode_spans_request(spans))
    assert ours == encode_spans(spans)
    assert len(ours.resource_spans) == 2
    assert [len(s.spans) for s in ours.resource_spans[0].scope_spans] == [2, 1]


def test_spans_of_the_sdks_tracer_parse_equal_too() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test", "1.0")
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER, attributes={"a": 1}) as outer:
        outer.add_event("event", {"e": "v"})
        with tracer.start_as_current_span("inner", links=[Link(_context(3, 4))]) as inner:
            inner.set_status(Status(StatusCode.ERROR, "no"))
    spans = list(exported.get_finished_spans())
    provider.shutdown()
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans_request(spans)) == (
        encode_spans(spans)
    )


def test_an_empty_batch_is_an_empty_request() -> None:
    assert otlp.encode_spans_request([]) == b""


@pytest.fixture
def receiver() -> Iterator[list[bytes]]:
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bodies.append(f"http://127.0.0.1:{server.server_port}/v1/traces".encode())
    yield bodies
    server.shutdown()
    server.server_close()


def test_the_exporter_posts_the_request(receiver: list[bytes]) -> None:
    exporter = otlp.Exporter(endpoint=receiver.pop().decode())
    spans = _spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(receiver) == 1
    assert ExportTraceServiceRequest.FromString(receiver[0]) == encode_spans(spans)
    assert exporter.export(spans) is SpanExportResult.FAILURE
