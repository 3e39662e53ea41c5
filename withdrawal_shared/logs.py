"""Structured JSON logs that carry the trace id and never hold secrets.

`configure(service)` once in each `__main__`; `trace_id_var` holds the current request's trace
id (set by the transports), and every record logged inside that request carries it. When
tracing is on (`withdrawal_shared.tracing`) and a span is active, a record carries that span's
trace id and span id instead.
`redact_token()` is the only way an API token may appear in a log: its public prefix.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import sys
import time
from typing import Any

from withdrawal_shared import tracing

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def new_trace_id() -> str:
    """A W3C-compatible 128-bit trace id as 32 lowercase hex digits, never all zeros.

    A trace id is unique, not secret: like OpenTelemetry's own id generator it comes from
    `random.getrandbits` (reseeded in a forked child), which spares every request that has no
    `traceparent` an `os.urandom` system call on the gateway's event loop."""
    while True:
        value = random.getrandbits(128)
        if value:
            return f"{value:032x}"


def trace_id_from_traceparent(header: str | None) -> str:
    """The trace id of a W3C `traceparent` header, or a new one when absent or malformed."""
    if header:
        parts = header.strip().split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            try:
                int(parts[1], 16)
            except ValueError:
                pass
            else:
                if parts[1] != "0" * 32:
                    return parts[1].lower()
    return new_trace_id()


def redact_token(token: str) -> str:
    """Keep only an API key's public prefix (`awk_<8 hex>`), never the secret part."""
    parts = token.split("_", 2)
    return f"{parts[0]}_{parts[1]}_…" if len(parts) == 3 else "…"


class JsonFormatter(logging.Formatter):
    """One JSON object per record. The gateway logs a line per created withdrawal, so the
    per-record work is kept small: the timestamp's text up to the second is kept while the
    second lasts, and one JSON encoder serves every record (`json.dumps` with options builds
    a new encoder per call)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._encode = json.JSONEncoder(default=str, separators=(",", ":")).encode
        self._second: tuple[int, str] = (-1, "")  # replaced whole: safe across threads

    def _timestamp(self, created: float, msecs: float) -> str:
        second, text = self._second
        if second != int(created):
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:  # an OpenTelemetry span is active
            entry["trace_id"], entry["span_id"] = ids
        else:
            trace_id = trace_id_var.get()
            if trace_id:
                entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encode(entry)


def configure(service: str, level: str | None = None) -> None:
    """Send JSON lines to stderr at LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
    # The JSON lines never show the caller's file and line, thread or process, so each record
    # need not find them (logging's documented optimisations): finding the caller alone was
    # a third of the cost of a log line, and the gateway logs one per created withdrawal.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
