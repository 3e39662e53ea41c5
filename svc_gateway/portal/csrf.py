"""CSRF protection for the portal's state-changing requests: the session's token in the
`X-CSRF-Token` header (compared in constant time), and the browser's own word on where the
request came from (`Sec-Fetch-Site`, `Origin`) when it gives one. The cookie's
`SameSite=Strict` is the second line. Sign-in has no session yet: it gets the origin checks and
must be JSON (a cross-site form cannot send that without a CORS preflight, which is refused)."""

from __future__ import annotations

import hmac

from aiohttp import web

from svc_gateway.errors import CSRF_TOKEN_INVALID
from withdrawal_shared.errors import ApiError

HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refused(message: str) -> ApiError:
    return CSRF_TOKEN_INVALID.error(message)


def check_origin(request: web.Request) -> None:
    """Refuse a state-changing request the browser says comes from another site or origin."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise _refused(f"Cross-site request refused (Sec-Fetch-Site: {site}).")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise _refused("Cross-origin request refused: the Origin is not this portal's.")


def check_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise _refused("Sign-in takes a JSON body (Content-Type: application/json).")


def check_token(request: web.Request, expected: str) -> None:
    """Refuse a state-changing request without the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request)
    sent = request.headers.get(HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise _refused(
            f"This request needs the portal session's CSRF token in the {HEADER} header. "
            "Reload the page and try again."
        )
