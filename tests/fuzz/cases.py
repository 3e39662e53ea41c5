"""What the fuzz tests do to a generated case before sending it."""

from __future__ import annotations

import schemathesis

FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def without_framing_headers(case: schemathesis.Case) -> None:
    """Drop generated HTTP framing headers: a made-up Content-Length breaks the HTTP message
    itself, which the server's HTTP parser refuses (400, text/plain) before the API sees it;
    the client sets the real one."""
    for name in [h for h in (case.headers or {}) if h.lower() in FRAMING_HEADERS]:
        del case.headers[name]  # type: ignore[index]
