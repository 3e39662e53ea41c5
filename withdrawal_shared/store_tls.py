"""TLS to the stores: the MySQL/MariaDB connection (PyMySQL) and the Redis connection.

Every service, the migrations and the database tools build their store connections here, so
what is verified is decided once:

- **Database** (`DatabaseTls`, from `DATABASE_TLS_CA`, `DATABASE_TLS_CERT`,
  `DATABASE_TLS_KEY`): with a CA set, `make_engine` hands PyMySQL an `ssl.SSLContext` that
  requires TLS (a server that does not offer it is refused), verifies the server's
  certificate against that CA and its name against `DATABASE_URL`'s host, and speaks TLS 1.2
  or newer; with a certificate and key also set, the client presents them (for users created
  `REQUIRE X509`). Without a CA, PyMySQL's own default applies: TLS when the server offers
  it, nothing verified. A SQLite URL has no connection to protect and is refused with the
  setting, and so is a `DATABASE_URL` whose query carries `ssl*` options of its own (they
  would override or switch off what the settings ask for).
- **Redis** (`redis_client`, from a `rediss://` `REDIS_URL` and `REDIS_TLS_CA`): the server's
  certificate is verified against the system's CAs and `REDIS_TLS_CA` (redis-py always loads
  the former) and its name against the URL's host, TLS 1.2 or newer. `REDIS_TLS_CA` with a
  `redis://` URL, and a `rediss://` URL carrying `ssl_*` query options (redis-py would let
  them override these), are refused.

Every refusal is a `SettingsError` naming the variable, raised when the settings are read,
so a misconfigured service stops at start (exit status 2) instead of connecting in the clear.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from withdrawal_shared.errors import SettingsError

if TYPE_CHECKING:  # imported where used: the settings import this module at start-up
    import redis.asyncio as aioredis

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


def _verifying_context(setting: str, ca: str) -> ssl.SSLContext:
    """A client context that verifies the peer's certificate against the CA file `ca` and
    its name (Python's defaults for a client: CERT_REQUIRED, check_hostname)."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except FileNotFoundError:
        raise SettingsError(f"{setting}={ca}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"{setting}={ca}: not a readable PEM file of CA certificates ({exc})"
        ) from None
    context.minimum_version = MINIMUM_TLS
    return context


def _no_password() -> bytes:
    return b""


@dataclass(frozen=True)
class DatabaseTls:
    """PEM files for TLS to MySQL/MariaDB: the CA that signed the server's certificate, and
    optionally this client's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_settings(
        cls, database_url: str, ca: str, cert: str = "", key: str = ""
    ) -> DatabaseTls | None:
        """The values of DATABASE_TLS_CA, _CERT and _KEY checked against DATABASE_URL: none
        set is None (no TLS settings), anything unusable a SettingsError naming it. The files
        are loaded once here, so a missing or broken one stops the service at start."""
        ca, cert, key = ca.strip(), cert.strip(), key.strip()
        if not (ca or cert or key):
            return None
        if not ca:
            raise SettingsError(
                "DATABASE_TLS_CERT/DATABASE_TLS_KEY are set without DATABASE_TLS_CA: set the CA "
                "that signed the server's certificate too"
            )
        if bool(cert) != bool(key):
            missing = "DATABASE_TLS_KEY" if cert else "DATABASE_TLS_CERT"
            raise SettingsError(
                f"{missing} is unset: a client certificate needs both DATABASE_TLS_CERT and "
                "DATABASE_TLS_KEY (or neither)"
            )
        check_database_url(database_url)
        tls = cls(Path(ca), Path(cert) if cert else None, Path(key) if key else None)
        tls.ssl_context()
        return tls

    def ssl_context(self) -> ssl.SSLContext:
        """The context PyMySQL wraps the connection in (SettingsError if a file is unusable)."""
        context = _verifying_context("DATABASE_TLS_CA", str(self.ca))
        if self.cert is not None and self.key is not None:
            for name, path in (("DATABASE_TLS_CERT", self.cert), ("DATABASE_TLS_KEY", self.key)):
                if not path.is_file():
                    raise SettingsError(f"{name}={path}: no such file")
            try:
                # An encrypted key fails here rather than prompting on a terminal.
                context.load_cert_chain(self.cert, self.key, password=_no_password)
            except (OSError, ssl.SSLError) as exc:
                raise SettingsError(
                    f"DATABASE_TLS_CERT={self.cert}, DATABASE_TLS_KEY={self.key}: not a PEM "
                    f"certificate and its unencrypted private key ({exc})"
                ) from None
        return context


def check_database_url(database_url: str) -> None:
    """DATABASE_URL can carry the DATABASE_TLS_* settings: a PyMySQL URL without `ssl*`
    query options of its own (SettingsError otherwise)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        # Never the value: the URL carries the password.
        raise SettingsError("DATABASE_URL is not a SQLAlchemy URL") from None
    if url.get_backend_name() == "sqlite":
        raise SettingsError(
            "DATABASE_TLS_CA is set but DATABASE_URL is a SQLite file, which has no connection "
            "to protect: unset DATABASE_TLS_* or use a mysql+pymysql:// URL"
        )
    if url.get_backend_name() != "mysql" or url.get_driver_name() != "pymysql":
        raise SettingsError(
            f"DATABASE_TLS_CA is set but DATABASE_URL uses {url.drivername}: TLS settings "
            "apply to mysql+pymysql:// URLs"
        )
    own = sorted(name for name in url.query if name.lower().startswith("ssl"))
    if own:
        raise SettingsError(
            f"DATABASE_URL carries {', '.join(own)}: with DATABASE_TLS_CA set, TLS is "
            "configured by the DATABASE_TLS_* settings alone; remove them from the URL"
        )


def check_redis_url(redis_url: str, tls_ca: str) -> None:
    """REDIS_URL and REDIS_TLS_CA fit together (SettingsError otherwise): a CA only with a
    `rediss://` URL, a `rediss://` URL without `ssl_*` query options, a readable CA file."""
    parts = urlsplit(redis_url)
    if tls_ca and parts.scheme != "rediss":
        raise SettingsError(
            f"REDIS_TLS_CA is set but REDIS_URL is a {parts.scheme or 'schemeless'}:// URL, "
            "which connects in the clear: use rediss://"
        )
    if parts.scheme == "rediss":
        own = sorted({name for name, _ in parse_qsl(parts.query) if name.lower().startswith("ssl")})
        if own:
            raise SettingsError(
                f"REDIS_URL carries {', '.join(own)}: a rediss:// connection always verifies "
                "the server (against REDIS_TLS_CA and the system's CAs); remove them"
            )
    if tls_ca:
        _verifying_context("REDIS_TLS_CA", tls_ca)


def redis_tls_kwargs(redis_url: str, tls_ca: str = "") -> dict[str, Any]:
    """redis-py's connection options for `redis_url`: for `rediss://`, the server's
    certificate verified (against the system's CAs and `tls_ca`) and its host name checked,
    TLS 1.2 or newer; nothing for `redis://`."""
    check_redis_url(redis_url, tls_ca)
    if urlsplit(redis_url).scheme != "rediss":
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": tls_ca or None,
        "ssl_min_version": MINIMUM_TLS,
    }


def redis_client(
    redis_url: str,
    *,
    tls_ca: str = "",
    socket_connect_timeout: float,
    socket_timeout: float,
) -> aioredis.Redis:
    """The asyncio Redis client of a service: `REDIS_URL` with TLS as `redis_tls_kwargs`
    describes (every service builds its client here, never with `from_url` itself)."""
    import redis.asyncio as aioredis

    return aioredis.from_url(
        redis_url,
        socket_connect_timeout=socket_connect_timeout,
        socket_timeout=socket_timeout,
        **redis_tls_kwargs(redis_url, tls_ca),
    )
