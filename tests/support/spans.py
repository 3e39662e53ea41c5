"""Spans kept in memory, for the tests of what the services trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from withdrawal_shared import tracing


@contextmanager
def spans_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TracerProvider, SimpleSpanProcessor, InMemorySpanExporter]]:
    """A provider whose spans end in an in-memory exporter, installed as `tracing.configure`
    installs one: the tracer, and the processor, resource and scope the state change spans
    are handed to directly. Shut down on exit."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    monkeypatch.setattr(tracing._state, "tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing._state, "processor", processor)
    monkeypatch.setattr(tracing._state, "resource", provider.resource)
    monkeypatch.setattr(tracing._state, "scope", InstrumentationScope("test"))
    try:
        yield provider, processor, exporter
    finally:
        provider.shutdown()
