"""OpenTelemetry tracing, on only when an OTLP endpoint is configured.

`configure(service)` (called by `runtime.run_service` before anything else starts) reads the
standard `OTEL_*` variables. With `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT` set (and `OTEL_SDK_DISABLED` not `true`) it installs a
TracerProvider (resource from `OTEL_RESOURCE_ATTRIBUTES`, `service.name` from
`OTEL_SERVICE_NAME` or the service's own name, the sampler from `OTEL_TRACES_SAMPLER`), a batch
span processor (`OTEL_BSP_*`) sending to the OTLP/HTTP exporter (`OTEL_EXPORTER_OTLP_*`) with
the encoder of `withdrawal_shared.otlp`, the SERVER span interceptor of
`withdrawal_shared.grpc_tracing` on every grpc.aio server, and the gRPC client instrumentation
on every client channel (health checks and reflection left out). Without an endpoint nothing
is installed: every helper here then returns at its first line, so a request pays one
attribute read.

What the services add by hand, through the helpers below:
- `traced_http` (`server_span`) for the gateway's REST routes (the gRPC ones come from the
  instrumentation);
- `batch_span`: work done for several requests or queue tasks at once (the gateway's group
  commit, the processor's batch of tasks): their child for one, linked to each for many;
- `traceparent()`: the W3C context of the current span, stored with a new withdrawal
  (`withdrawals.trace_context`) and carried in its queue task (`WithdrawalTask.traceparent`);
- `work_span`: a batch upload's ingest, whose context every row of the batch stores;
- `record_moves`: one span per state change, parented to the withdrawal's stored context
  (so the processor's, the signer's and the monitor's work joins the trace the gateway call
  started) and linked to the span doing the work; `transitions.move`/`move_many` record them
  when their transaction commits;
- `payout_span`: a payout transaction's work, parented to its first withdrawal's context and
  linked to every withdrawal's, so one payout paying many withdrawals shows in all their
  traces;
- `delivery_span`: a webhook attempt (the webhook sender), a CLIENT span parented to the
  withdrawal's stored context, so each event's deliveries show in the withdrawal's trace;
- `span`: a child span of the current one around a database or Redis call (none when no span
  is active, so polling loops make no root traces).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, Span, SpanContext, Tracer

    from withdrawal_shared.db.transitions import Moved

T = TypeVar("T")

TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_SCOPE = "withdrawal_shared.tracing"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version-00 W3C `traceparent`, the form `traceparent()` writes."""
_UNTRACED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class _State:
    tracer: Tracer | None = None
    shutdown: Callable[[], None] | None = None
    # What `record_moves` hands its finished state-change spans to directly (see there).
    processor: SpanProcessor | None = None
    resource: Resource | None = None
    scope: InstrumentationScope | None = None


_state = _State()


def enabled() -> bool:
    """Whether `configure` installed tracing in this process."""
    return _state.tracer is not None


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for tracing: an OTLP endpoint, and the SDK not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get(TRACES_ENDPOINT_ENV, "").strip() or env.get(ENDPOINT_ENV, "").strip())


def configure(service: str) -> bool:
    """Install tracing for `service` when `wanted()`; True when installed. Idempotent."""
    if _state.tracer is not None:
        return True
    if not wanted():
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service
    provider = TracerProvider(resource=_hashed_once(Resource.create({SERVICE_NAME: name})))
    from withdrawal_shared.otlp import Exporter

    processor = BatchSpanProcessor(Exporter())
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    from withdrawal_shared import grpc_tracing

    grpc_tracing.instrument(_traced_call, processor)
    GrpcInstrumentorClient(filter_=_traced_call).instrument()  # type: ignore[no-untyped-call]
    _state.tracer = trace.get_tracer(_SCOPE)
    _state.shutdown = provider.shutdown
    _state.processor, _state.resource = processor, provider.resource
    _state.scope = InstrumentationScope(_SCOPE)
    return True


def _hashed_once(resource: Resource) -> Resource:
    """`resource` with its hash computed once. The OTLP encoder groups every batch's spans by
    resource, hashing it once per span, and `Resource.__hash__` is a sorted JSON dump of its
    attributes each time (about 6 µs, of the 25-30 µs a state change span costs to encode)."""
    from opentelemetry.sdk.resources import Resource

    class _HashedOnce(Resource):
        _hash: int | None = None

        def __hash__(self) -> int:
            if self._hash is None:
                self._hash = super().__hash__()
            return self._hash

    return _HashedOnce(resource.attributes, resource.schema_url)


def _traced_call(details: Any) -> bool:
    """The gRPC instrumentation's filter: every call but the health checks' and reflection's.

    `details` is the server's call details (`.method`) or the client interceptor's call info
    (`.full_method`), the method as `/package.Service/Method`. Built from the
    instrumentation's own `filters` (three `service_name`) this choice cost 48 µs on every
    call, client and server (runtime `Protocol` isinstance checks and path normalisation per
    filter); a set lookup costs 0.3 µs."""
    method = getattr(details, "method", None) or getattr(details, "full_method", None) or ""
    if isinstance(method, bytes):
        method = method.decode()
    return str(method).lstrip("/").rpartition("/")[0] not in _UNTRACED_SERVICES


def shutdown() -> None:
    """Export what is buffered and stop (at the end of the process)."""
    stop, _state.shutdown = _state.shutdown, None
    _state.tracer = None
    _state.processor = _state.resource = _state.scope = None
    if stop is not None:
        stop()


# -- the W3C context ----------------------------------------------------------------------


def traceparent() -> str | None:
    """The current span's W3C `traceparent`, or None (tracing off, or no span active)."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, or None (tracing off, no span)."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _span_context(header: str | None) -> SpanContext | None:
    """The remote SpanContext a `traceparent` names, or None when empty or malformed. A
    version-00 header (what `traceparent()` writes) is parsed here, anything else by the
    standard propagator."""
    if not header:
        return None
    return _parsed_span_context(header)


@functools.lru_cache(maxsize=8192)
def _parsed_span_context(header: str) -> SpanContext | None:
    """`_span_context` of a non-empty header, remembered: a withdrawal's stored context is
    read again for each of its state changes and for the links of every batch and payout
    span that works on it, mostly within seconds (a SpanContext is immutable)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanContext, TraceFlags

    match = _TRACEPARENT.fullmatch(header)
    if match is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract({"traceparent": header})
        found = trace.get_current_span(context).get_span_context()
        return found if found.is_valid else None
    trace_id, span_id, flags = (int(group, 16) for group in match.groups())
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def _extract(header: str | None) -> Context | None:
    """The context a `traceparent` names, or None when empty or malformed."""
    remote = _span_context(header)
    if remote is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan

    return trace.set_span_in_context(NonRecordingSpan(remote))


def _links(headers: Sequence[str | None]) -> list[Link]:
    """A link to each distinct context the headers name (empty and malformed ones left out)."""
    from opentelemetry.trace import Link

    links: list[Link] = []
    seen: set[str] = set()
    for header in headers:
        if not header or header in seen:
            continue
        remote = _span_context(header)
        if remote is None:
            continue
        seen.add(header)
        links.append(Link(remote))
    return links


# -- spans ----------------------------------------------------------------------------------


class _Current:
    """A started SDK span made current for a `with` block and ended at its end, recording an
    exception that escapes it (with an error status), as `Tracer.start_as_current_span` does,
    without its two generator-based context managers (about 4.5 µs less a span)."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.token: object = None

    def __enter__(self) -> Span:
        from opentelemetry import context as context_api
        from opentelemetry import trace

        self.token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        from opentelemetry import context as context_api

        try:
            # Errors only: a BaseException that is not an Exception (a cancellation, a
            # generator's exit) is no failure of the span's work.
            if isinstance(error, Exception) and self.span.is_recording():
                from opentelemetry.trace import Status, StatusCode

                self.span.record_exception(error)
                self.span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {error}"))
        finally:
            context_api.detach(self.token)  # type: ignore[arg-type]
            self.span.end()


def _started(
    name: str,
    *,
    context: Context | None = None,
    kind: Any = None,
    links: Sequence[Link] = (),
    attributes: Mapping[str, Any] | None = None,
) -> _Current:
    from opentelemetry.trace import SpanKind

    assert _state.tracer is not None
    return _Current(
        _state.tracer.start_span(
            name,
            context=context,
            kind=kind or SpanKind.INTERNAL,
            links=links,
            attributes=dict(attributes or {}),
        )
    )


_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A child of the current span around a database or Redis call; a no-op when tracing is
    off or no span is active (a poll outside any request makes no trace of its own)."""
    if _state.tracer is None:
        return _NULL
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().is_valid:
        return _NULL
    return _started(name, attributes=attributes)


def work_span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span of work whose context is stored with what it makes (a batch upload's ingest,
    in every row's `trace_context`): the child of the current span, or a trace of its own
    when none is active; a no-op when tracing is off."""
    if _state.tracer is None:
        return _NULL
    return _started(name, attributes=attributes)


def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A SERVER span for one HTTP request, continuing the caller's `traceparent` if any."""
    if _state.tracer is None:
        return _NULL
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    return _started(name, context=extract(headers), kind=SpanKind.SERVER, attributes=attributes)


async def traced_http(
    request: Any, serve: Callable[[Any], Awaitable[T]], route_of: Callable[[Any], str]
) -> T:
    """`serve(request)` (an aiohttp request) inside a SERVER span named for its route
    (`route_of(request)` once served, e.g. `POST /v1/withdrawals`), with its status code."""
    with server_span(
        request.method,
        request.headers,
        {"http.request.method": request.method, "url.path": request.path},
    ) as started:
        response = await serve(request)
        if started is not None:
            from opentelemetry.trace import StatusCode

            route = route_of(request)
            status = int(getattr(response, "status", 0))
            started.update_name(route)
            started.set_attribute("http.route", route.split(" ", 1)[-1])
            started.set_attribute("http.response.status_code", status)
            if status >= 500:
                started.set_status(StatusCode.ERROR)
        return response


def batch_span(
    name: str,
    traceparents: Sequence[str | None],
    attributes: Mapping[str, Any] | None = None,
    *,
    consumer: bool = False,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span of work done for several requests or queue tasks at once (the gateway's group
    commit, a batch of tasks; a CONSUMER span with `consumer`): the child of their context
    when they share one (a batch of one), otherwise a trace of its own linked to each."""
    if _state.tracer is None:
        return _NULL
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CONSUMER if consumer else SpanKind.INTERNAL
    known = [t for t in traceparents if t]
    if len(set(known)) == 1:
        return _started(name, context=_extract(known[0]), kind=kind, attributes=attributes)
    return _started(name, context=Context(), kind=kind, links=_links(known), attributes=attributes)


def payout_span(
    name: str, payout_tx_id: str, traceparents: Sequence[str | None]
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of work on one payout transaction: in the trace of its first withdrawal that
    has one (a fresh trace when none has), linked to every withdrawal's trace. Inside a span
    of the same payout already (a broadcast right after signing), a child of that span."""
    if _state.tracer is None:
        return _NULL
    from opentelemetry import trace
    from opentelemetry.context import Context

    attributes = getattr(trace.get_current_span(), "attributes", None) or {}
    if attributes.get("payout.id") == payout_tx_id:
        return _started(name, attributes={"payout.id": payout_tx_id})

    known = [t for t in traceparents if t]
    parent = _extract(known[0]) if known else None
    return _started(
        name,
        context=parent or Context(),
        links=_links(known),
        attributes={"payout.id": payout_tx_id, "payout.withdrawals": len(traceparents)},
    )


def delivery_span(
    name: str, traceparent: str | None, attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Span | None]:
    """A CLIENT span of an outgoing call made for one withdrawal (a webhook attempt): the
    child of its stored context (`withdrawals.trace_context`) when it names one, a trace of
    its own otherwise."""
    if _state.tracer is None:
        return _NULL
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    return _started(
        name,
        context=_extract(traceparent) or Context(),
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )


def end_client_span(span: Span, status_code: int, error: str) -> None:
    """An outgoing HTTP call's answer on its span: the status code (0: no answer), an error
    status unless 2xx, with `error` as its description."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("http.response.status_code", status_code)
    if not 200 <= status_code < 300:
        span.set_status(StatusCode.ERROR, error or f"HTTP {status_code}")


def current_span_context() -> Any:
    """The current span's SpanContext (None when tracing is off), for `record_moves` later."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


def record_moves(moved: Sequence[Moved], actor: str, worker: Any = None) -> None:
    """One span per state change, parented to the withdrawal's stored context (the current
    span's when it has none) and linked to the span doing the work (`worker`, a SpanContext
    from `current_span_context`, else the current span) when that is another span.

    These are most of the spans the services make (seven per paid withdrawal), so they skip
    the SDK's span object: a state change is an instant with attributes known up front, so
    each is built finished (a `ReadableSpan` with a random span id, start = end = now) and
    handed to the batch span processor, as `Span.end()` would. They follow their parent's
    sampling decision (the standard `parentbased_*` samplers' rule); a state change without
    any parent (no stored context, no current span) starts a trace through the SDK and its
    sampler."""
    if _state.tracer is None or not moved:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Link, SpanContext

    current = worker if isinstance(worker, SpanContext) else None
    if current is None:
        current = trace.get_current_span().get_span_context()
    current_link = (Link(current),) if current.is_valid else ()
    current_ids = (current.trace_id, current.span_id)
    for change in moved:
        stored = _span_context(change.trace_context)
        links = (
            current_link
            if stored is None or (stored.trace_id, stored.span_id) != current_ids
            else ()
        )
        from_state = change.from_state.value if change.from_state is not None else ""
        attributes: dict[str, Any] = {
            "withdrawal.id": change.withdrawal_id,
            "withdrawal.from_state": from_state,
            "withdrawal.to_state": change.to_state.value,
            "withdrawal.version": change.version,
            "withdrawal.actor": actor,
        }
        if change.reason:
            attributes["withdrawal.reason"] = change.reason
        if change.reorged:
            attributes["withdrawal.reorged"] = True
        name = f"withdrawal {from_state or 'NEW'} -> {change.to_state.value}"
        parent = stored if stored is not None else (current if current.is_valid else None)
        if parent is None or _state.processor is None:
            _state.tracer.start_span(name, links=links, attributes=attributes).end()
            continue
        if not parent.trace_flags.sampled:
            continue
        now = time.time_ns()
        _state.processor.on_end(
            ReadableSpan(
                name,
                context=SpanContext(
                    parent.trace_id,
                    random.getrandbits(64) or 1,
                    is_remote=False,
                    trace_flags=parent.trace_flags,
                ),
                parent=parent,
                resource=_state.resource,
                attributes=attributes,
                links=links,
                start_time=now,
                end_time=now,
                instrumentation_scope=_state.scope,
            )
        )


def run_in_context(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """`fn(*args)` to run on another thread inside this task's current context (the active
    span), as `loop.run_in_executor` alone does not; `fn(*args)` unchanged when tracing is
    off."""
    if _state.tracer is None:
        return lambda: fn(*args)
    import contextvars

    context = contextvars.copy_context()
    return lambda: context.run(fn, *args)
