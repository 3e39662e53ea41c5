"""Which URLs an endpoint may have and which addresses the sender may connect to.

An endpoint URL is `https` (or `http` to a loopback host when the development setting
`WEBHOOKS_ALLOW_HTTP_LOOPBACK` is on), without user info, at most 2048 characters. Every
address its host resolves to must be a public unicast address: private (10/8, 172.16/12,
192.168/16, fc00::/7), loopback, link-local (169.254/16 with the cloud metadata address,
fe80::/10), carrier-grade NAT, multicast, reserved and unspecified addresses are refused, also
inside IPv4-mapped IPv6. Loopback is allowed only under the development setting. The gateway
checks at registration and the sender again before every attempt (DNS may change).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

ENV_ALLOW_HTTP_LOOPBACK = "WEBHOOKS_ALLOW_HTTP_LOOPBACK"
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 3.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """The URL or the addresses its host resolves to are not allowed; the message says why."""


def allow_http_loopback() -> bool:
    """The development setting: `http` and loopback addresses allowed (tests, `make up`)."""
    raw = os.environ.get(ENV_ALLOW_HTTP_LOOPBACK, "").strip().lower()
    return raw in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class EndpointUrl:
    url: str
    host: str
    port: int
    scheme: str


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str, *, allow_loopback: bool) -> EndpointUrl:
    """The URL's parts, or UrlRefused when its form is not allowed (no lookup)."""
    if not url:
        raise UrlRefused("is required: an https URL")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlRefused("contains whitespace or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not carry a user name or password")
    if scheme == "http":
        if not (allow_loopback and _is_loopback_name(host)):
            raise UrlRefused("must use https")
    elif scheme != "https":
        raise UrlRefused("must use https")
    if parts.fragment:
        raise UrlRefused("must not have a fragment (#...)")
    return EndpointUrl(url, host, port or (443 if scheme == "https" else 80), scheme)


def refused_address(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why the sender must not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "not a unicast address"
    if not address.is_global:
        return "not a public address"
    return None


async def resolve_checked(endpoint: EndpointUrl, *, allow_loopback: bool) -> list[str]:
    """Every address the host resolves to, each allowed; UrlRefused naming the first that is
    not, or when the host does not resolve."""
    try:  # an address literal needs no lookup
        literal = ipaddress.ip_address(endpoint.host.strip("[]"))
    except ValueError:
        pass
    else:
        why = refused_address(literal, allow_loopback=allow_loopback)
        if why is not None:
            raise UrlRefused(f"host {endpoint.host!r} resolves to {literal}, {why}")
        return [str(literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError, UnicodeError):
        raise UrlRefused(f"host {endpoint.host!r} does not resolve") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise UrlRefused(f"host {endpoint.host!r} resolves to {text!r}") from None
        why = refused_address(address, allow_loopback=allow_loopback)
        if why is not None:
            raise UrlRefused(f"host {endpoint.host!r} resolves to {address}, {why}")
        addresses.append(str(address))
    if not addresses:
        raise UrlRefused(f"host {endpoint.host!r} does not resolve")
    return addresses


async def check_url(url: str, *, allow_loopback: bool) -> EndpointUrl:
    """Form and addresses both checked (UrlRefused says why)."""
    endpoint = parse_url(url, allow_loopback=allow_loopback)
    await resolve_checked(endpoint, allow_loopback=allow_loopback)
    return endpoint
