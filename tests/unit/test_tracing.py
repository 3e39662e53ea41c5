"""`withdrawal_shared.tracing` in one process, without touching the global tracer provider: off
without an endpoint (every helper a no-op), and with a tracer of a local provider writing to
memory: state change spans parented to the stored context, payout spans linked to every
withdrawal, queue tasks carrying the context, and log lines carrying the span's ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from assetwithdrawal.events.v1 import events_pb2
from tests.support.spans import spans_in_memory
from withdrawal_shared import tracing
from withdrawal_shared.db.transitions import Moved
from withdrawal_shared.logs import JsonFormatter, trace_id_var
from withdrawal_shared.queue import encode_task
from withdrawal_shared.states import Priority, State

STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with spans_in_memory(monkeypatch) as (_, _, exporter):
        yield exporter


def _moved(withdrawal_id: str, to_state: State, trace_context: str | None) -> Moved:
    return Moved(
        withdrawal_id,
        "p",
        State.RECEIVED,
        to_state,
        2,
        "",
        False,
        dt.datetime(2026, 1, 1),
        trace_context,
    )


def _record(message: str) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, "", 0, message, None, None)
    decoded: dict[str, object] = json.loads(JsonFormatter("gateway").format(record))
    return decoded


def test_off_without_an_endpoint() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.enabled()
    assert tracing.traceparent() is None and tracing.current_ids() is None
    with tracing.span("x") as nothing, tracing.payout_span("p", "id", [STORED]) as none_either:
        assert nothing is None and none_either is None
    with (
        tracing.delivery_span("d", STORED, {}) as no_delivery,
        tracing.work_span("w") as no_work,
    ):
        assert no_delivery is None and no_work is None
    tracing.record_moves([_moved("w1", State.VALIDATED, STORED)], "processor")


def test_logs_keep_the_trace_id_var_without_a_span() -> None:
    token = trace_id_var.set("ab" * 16)
    try:
        entry = _record("hello")
    finally:
        trace_id_var.reset(token)
    assert entry["trace_id"] == "ab" * 16 and "span_id" not in entry


def test_logs_carry_the_active_spans_ids(exported: InMemorySpanExporter) -> None:
    assert tracing._state.tracer is not None
    with tracing._state.tracer.start_as_current_span("request") as span:
        context = span.get_span_context()
        entry = _record("inside")
        flags = f"{int(context.trace_flags):02x}"
        assert tracing.traceparent() == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"


def test_state_changes_are_children_of_the_stored_context(
    exported: InMemorySpanExporter,
) -> None:
    assert tracing._state.tracer is not None
    with tracing._state.tracer.start_as_current_span("worker") as worker:
        tracing.record_moves([_moved("w1", State.VALIDATED, STORED)], "processor")
    (change,) = [s for s in exported.get_finished_spans() if s.name != "worker"]
    assert change.name == "withdrawal RECEIVED -> VALIDATED"
    assert change.parent is not None
    assert f"{change.context.trace_id:032x}" == STORED.split("-")[1]
    assert f"{change.parent.span_id:016x}" == STORED.split("-")[2]
    assert change.attributes is not None and change.attributes["withdrawal.id"] == "w1"
    assert [link.context.span_id for link in change.links] == [worker.get_span_context().span_id]


def test_state_changes_follow_their_parents_sampling_and_ids(
    exported: InMemorySpanExporter,
) -> None:
    unsampled = STORED[:-2] + "00"
    moves = [
        _moved("w1", State.VALIDATED, STORED),
        _moved("w2", State.VALIDATED, unsampled),  # its trace was not sampled: no span
        _moved("w3", State.VALIDATED, OTHER),
        _moved("w4", State.VALIDATED, "00-" + "0" * 32 + "-b7ad6b7169203331-01"),  # invalid id
    ]
    tracing.record_moves(moves, "processor")  # no current span: w4 starts a trace of its own
    spans = {
        str(s.attributes["withdrawal.id"]): s for s in exported.get_finished_spans() if s.attributes
    }
    assert set(spans) == {"w1", "w3", "w4"}
    for withdrawal, header in (("w1", STORED), ("w3", OTHER)):
        change = spans[withdrawal]
        assert change.parent is not None and change.parent.is_remote
        assert f"{change.context.trace_id:032x}" == header.split("-")[1]
        assert f"{change.parent.span_id:016x}" == header.split("-")[2]
        assert change.context.span_id not in (0, change.parent.span_id)
        assert change.context.trace_flags.sampled and not change.links
        assert change.start_time is not None and change.start_time == change.end_time
        assert change.resource is not None
    assert spans["w1"].context.span_id != spans["w3"].context.span_id
    root = spans["w4"]
    assert root.parent is None and f"{root.context.trace_id:032x}" != "0" * 32
    assert root.attributes is not None and root.attributes["withdrawal.actor"] == "processor"


def test_a_traceparent_of_another_version_goes_through_the_propagator(
    exported: InMemorySpanExporter,
) -> None:
    future = "01-" + STORED[3:] + "-what-comes-next"  # W3C: later versions may append fields
    tracing.record_moves([_moved("w1", State.QUEUED, future)], "processor")
    (change,) = exported.get_finished_spans()
    assert change.parent is not None
    assert f"{change.parent.span_id:016x}" == STORED.split("-")[2]


def test_a_payout_joins_its_first_withdrawal_and_links_to_all(
    exported: InMemorySpanExporter,
) -> None:
    with (
        tracing.payout_span("payout", "tx1", [None, STORED, OTHER]),
        tracing.payout_span("broadcast", "tx1", [STORED, OTHER]),
    ):
        pass
    spans = {s.name: s for s in exported.get_finished_spans()}
    payout, broadcast = spans["payout"], spans["broadcast"]
    assert f"{payout.context.trace_id:032x}" == STORED.split("-")[1]
    assert {f"{link.context.trace_id:032x}" for link in payout.links} == {
        STORED.split("-")[1],
        OTHER.split("-")[1],
    }
    assert broadcast.parent is not None and broadcast.parent.span_id == payout.context.span_id


def test_a_batch_of_tasks_links_to_each_and_one_task_continues_its_trace(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.batch_span("one", [STORED], consumer=True):
        pass
    with tracing.batch_span("many", [STORED, OTHER, ""], consumer=True):
        pass
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert spans["one"].parent is not None
    assert f"{spans['one'].parent.span_id:016x}" == STORED.split("-")[2]
    assert spans["many"].parent is None and len(spans["many"].links) == 2


def test_a_webhook_attempt_is_a_client_child_of_the_stored_context(
    exported: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    with tracing.delivery_span("ok", STORED, {"webhook.event_id": "evt_1"}) as ok:
        assert ok is not None
        tracing.end_client_span(ok, 204, "")
    with tracing.delivery_span("failed", None, {}) as failed:
        assert failed is not None
        tracing.end_client_span(failed, 0, "timed out")
    spans = {s.name: s for s in exported.get_finished_spans()}
    sent, timed_out = spans["ok"], spans["failed"]
    assert sent.kind == SpanKind.CLIENT and sent.parent is not None
    assert f"{sent.context.trace_id:032x}" == STORED.split("-")[1]
    assert f"{sent.parent.span_id:016x}" == STORED.split("-")[2]
    assert sent.attributes is not None
    assert sent.attributes["http.response.status_code"] == 204
    assert sent.status.status_code == StatusCode.UNSET
    assert timed_out.parent is None  # no stored context: a trace of its own
    assert timed_out.status.status_code == StatusCode.ERROR
    assert timed_out.status.description == "timed out"


def test_a_work_span_is_a_child_of_the_current_span_or_a_root(
    exported: InMemorySpanExporter,
) -> None:
    assert tracing._state.tracer is not None
    with tracing.work_span("alone") as alone:
        assert alone is not None
        assert tracing.traceparent() is not None
    with (
        tracing._state.tracer.start_as_current_span("request") as request,
        tracing.work_span("ingest"),
    ):
        stored = tracing.traceparent()
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert spans["alone"].parent is None
    ingest = spans["ingest"]
    assert ingest.parent is not None
    assert ingest.parent.span_id == request.get_span_context().span_id
    context = ingest.context
    flags = f"{int(context.trace_flags):02x}"
    assert stored == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def test_the_task_carries_the_context() -> None:
    task = events_pb2.WithdrawalTask.FromString(encode_task("w1", Priority.STANDARD, STORED))
    assert task.traceparent == STORED
    assert (
        events_pb2.WithdrawalTask.FromString(encode_task("w1", Priority.STANDARD)).traceparent == ""
    )


def test_the_grpc_instrumentation_leaves_out_health_checks_and_reflection_only() -> None:
    @dataclasses.dataclass
    class ServerCall:  # what the server interceptor filters on
        method: str | bytes

    @dataclasses.dataclass
    class ClientCall:  # the client interceptor's call info
        full_method: str

    create = "/assetwithdrawal.withdrawal.v1.WithdrawalService/CreateWithdrawal"
    assert tracing._traced_call(ServerCall(create))
    assert tracing._traced_call(ServerCall(create.encode()))
    assert tracing._traced_call(ClientCall("/assetwithdrawal.signer.v1.SignerService/Sign"))
    assert not tracing._traced_call(ServerCall("/grpc.health.v1.Health/Check"))
    assert not tracing._traced_call(ClientCall("/grpc.health.v1.Health/Watch"))
    for reflection in (
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        assert not tracing._traced_call(ServerCall(f"/{reflection}/ServerReflectionInfo"))


def test_the_resource_is_hashed_once_and_equals_its_original() -> None:
    original = Resource.create({SERVICE_NAME: "gateway"})
    hashed = tracing._hashed_once(original)
    assert hashed == original and hash(hashed) == hash(original)
    assert dict(hashed.attributes) == dict(original.attributes)
    assert {hashed: 1}[original] == 1  # the OTLP encoder groups spans by resource


def test_links_name_each_distinct_context_once() -> None:
    links = tracing._links([STORED, None, "", "garbage", STORED, OTHER])
    assert [f"{link.context.span_id:016x}" for link in links] == [STORED[36:52], OTHER[36:52]]
    assert tracing._span_context(STORED) is tracing._span_context(STORED)  # parsed once
