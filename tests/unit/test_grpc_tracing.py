"""`withdrawal_shared.grpc_tracing`: a grpc.aio server with its interceptor records one SERVER
span per call, continuing the caller's `traceparent` (current inside the servicer, so what
the call stores and logs names it), with the status the caller gets; health checks and
unsampled callers make none."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.spans import spans_in_memory
from withdrawal_shared import grpc_tracing, tracing

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with spans_in_memory(monkeypatch) as (provider, processor, exporter):
        monkeypatch.setattr(grpc_tracing.trace, "get_tracer", provider.get_tracer)
        grpc_tracing.instrument(tracing._traced_call, processor)
        try:
            yield exporter
        finally:
            grpc_tracing.uninstrument()


def _serve_and_call() -> dict[str, object]:
    seen: dict[str, object] = {}

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen["traceparent"] = tracing.traceparent()
        return request

    async def bad(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad amount")
        return b""

    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise ValueError("boom")

    async def main() -> None:
        server = grpc.aio.server()
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Bad": grpc.unary_unary_rpc_method_handler(bad),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
        }
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("test.Svc", handlers),
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health", {"Check": handlers["Echo"]}
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                echo_call = channel.unary_unary("/test.Svc/Echo")
                assert await echo_call(b"x", metadata=(("traceparent", CALLER),)) == b"x"
                seen["first"] = seen.pop("traceparent")
                await echo_call(b"y")  # no caller context: a trace of its own
                await echo_call(b"z", metadata=(("traceparent", UNSAMPLED),))
                await channel.unary_unary("/grpc.health.v1.Health/Check")(b"h")
                for method, code in (("Bad", "INVALID_ARGUMENT"), ("Boom", "UNKNOWN")):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await channel.unary_unary(f"/test.Svc/{method}")(b"")
                    assert caught.value.code().name == code
                    if method == "Bad":
                        assert caught.value.details() == "bad amount"
        finally:
            await server.stop(None)

    asyncio.run(main())
    return seen


def test_one_server_span_per_traced_call(exported: InMemorySpanExporter) -> None:
    seen = _serve_and_call()
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == [
        "/test.Svc/Echo",
        "/test.Svc/Echo",
        "/test.Svc/Bad",
        "/test.Svc/Boom",
    ]
    first, own, bad, boom = spans
    for span in spans:
        assert span.kind is SpanKind.SERVER
        assert span.instrumentation_scope == InstrumentationScope(
            "opentelemetry.instrumentation.grpc",
            grpc_tracing._INSTRUMENTATION_VERSION,
            "https://opentelemetry.io/schemas/1.11.0",
        )
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    assert first.parent is not None and first.parent.is_remote
    assert f"{first.parent.trace_id:032x}" == CALLER[3:35]
    assert f"{first.parent.span_id:016x}" == CALLER[36:52]
    assert first.context is not None
    assert seen["first"] == f"00-{first.context.trace_id:032x}-{first.context.span_id:016x}-01"
    assert dict(first.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "test.Svc",
        "rpc.method": "Echo",
        "rpc.grpc.status_code": 0,
    }
    assert first.status.status_code is StatusCode.UNSET
    assert own.parent is None and own.context is not None
    assert own.context.trace_id != first.context.trace_id
    assert (bad.attributes or {})["rpc.grpc.status_code"] == 3
    assert bad.status.status_code is StatusCode.UNSET  # a caller's error, not the server's
    assert (boom.attributes or {})["rpc.grpc.status_code"] == 2
    assert boom.status.status_code is StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]
    assert (boom.events[0].attributes or {})["exception.type"] == "ValueError"
