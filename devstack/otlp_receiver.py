"""An OTLP/HTTP trace receiver on loopback: what the services' exporters send their spans to in
the trace test (`tests/tracing`) and in the cost-of-seeing benchmark (`bench.seeing`).

`POST /v1/traces` takes an `ExportTraceServiceRequest` (protobuf, optionally gzip-encoded) and
answers an empty `ExportTraceServiceResponse`; `GET /stats` answers the counts as JSON. A
`Receiver` counts requests, bytes, spans per service and state-change spans (those carrying
`withdrawal.to_state`, one per audit row); with `keep=True` it also keeps every span
(`Collected`) for a test to inspect.

In a test it runs as a thread of the test process (`OtlpServer`). For a benchmark it runs as a
process of its own (`ReceiverProcess`, i.e. `python -m devstack.otlp_receiver --port N`), so
that its CPU is measured apart from the pipeline's: in production the collector runs
elsewhere. Connections are kept alive (HTTP/1.1), one thread per exporter connection.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

STATE_CHANGE_ATTRIBUTE = "withdrawal.to_state"
_EMPTY_REPLY = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


@dataclass(frozen=True)
class Collected:
    """One span as received, with the `service.name` of the resource that sent it."""

    service: str
    span: trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    def attribute(self, key: str) -> object:
        for kv in self.span.attributes:
            if kv.key == key:
                value = kv.value
                return getattr(value, value.WhichOneof("value") or "string_value")
        return None

    @property
    def links(self) -> set[tuple[str, str]]:
        return {(link.trace_id.hex(), link.span_id.hex()) for link in self.span.links}


class Receiver:
    """What the server received: counts always, the spans themselves when `keep`."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[Collected] = []
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.span_count = 0
        self.state_changes = 0
        self.by_service: Counter[str] = Counter()
        self.errors = 0

    def add(self, body: bytes) -> None:
        """Decode one export request and count (and keep) its spans."""
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        kept: list[Collected] = []
        spans = state_changes = 0
        by_service: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    by_service[service] += 1
                    if any(kv.key == STATE_CHANGE_ATTRIBUTE for kv in span.attributes):
                        state_changes += 1
                    if self.keep:
                        kept.append(Collected(service, span))
        with self.lock:
            self.requests += 1
            self.bytes += len(body)
            self.span_count += spans
            self.state_changes += state_changes
            self.by_service.update(by_service)
            self.spans.extend(kept)

    def failed(self) -> None:
        with self.lock:
            self.errors += 1

    def snapshot(self) -> list[Collected]:
        with self.lock:
            return list(self.spans)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "bytes": self.bytes,
                "spans": self.span_count,
                "state_change_spans": self.state_changes,
                "spans_by_service": dict(sorted(self.by_service.items())),
                "bad_requests": self.errors,
            }


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per exporter

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self._reply(404, b"", "text/plain")
                return
            try:
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                receiver.add(body)
            except Exception:  # a malformed request: 400, and counted
                receiver.failed()
                self._reply(400, b"", "text/plain")
                return
            self._reply(200, _EMPTY_REPLY, "application/x-protobuf")

        def do_GET(self) -> None:
            if self.path != "/stats":
                self._reply(404, b"", "text/plain")
                return
            self._reply(200, json.dumps(receiver.stats()).encode(), "application/json")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class OtlpServer:
    """`receiver` served on 127.0.0.1:`port` (0: any) by a thread of this process."""

    def __init__(self, receiver: Receiver, port: int = 0) -> None:
        self.receiver = receiver
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        """The endpoint to give as `OTEL_EXPORTER_OTLP_ENDPOINT`."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ReceiverProcess:
    """The receiver as a process of its own, counting only (`keep=False`)."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 30.0) -> Self:
        out = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        try:
            # Our own interpreter and module, a port number: no outside input.
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "devstack.otlp_receiver", "--port", str(self.port)],
                stdout=out,
                stderr=out,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the OTLP receiver did not start on {self.url}") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:  # noqa: S310
            stats: dict[str, Any] = json.loads(response.read())
            return stats

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an OTLP/HTTP trace receiver that counts spans")
    parser.add_argument("--port", type=int, default=4318, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with OtlpServer(Receiver(keep=False), args.port) as server:
        print(f"otlp receiver: {server.url}/v1/traces (counts at {server.url}/stats)", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
