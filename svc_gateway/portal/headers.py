"""The security headers of every `/portal` response (pages, assets, API answers, errors),
added as the response is prepared, so streamed ones (the CSV report) get them too."""

from __future__ import annotations

from aiohttp import web

PREFIX = "/portal"
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def is_portal(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: the headers above on every portal response, and
    `no-store` on all but the static assets."""
    if not is_portal(request.path):
        return
    response.headers.update(HEADERS)
    if "/static/" not in request.path:
        response.headers["Cache-Control"] = "no-store"
