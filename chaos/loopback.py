"""The loopback-only rule of the chaos tools: they talk to 127.0.0.0/8 and nothing else."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["require_loopback_url"]


def require_loopback_url(url: str) -> str:
    """`url` if it is http(s) to a literal IPv4 loopback address (127.0.0.0/8), else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise ValueError(f"only literal 127.0.0.0/8 URLs are allowed, got {url!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"only 127.0.0.0/8 URLs are allowed, got {url!r}")
    return url
