"""Helpers for the one settings object each service reads from its environment.

Each service declares a frozen dataclass of its settings with documented defaults and builds
it with `from_env()`; these helpers parse values and fail with a message naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from withdrawal_shared.errors import SettingsError as SettingsError  # noqa: PLC0414 - re-export
from withdrawal_shared.store_tls import DatabaseTls, check_redis_url

REPO_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AWS_VAR_DIR", REPO_ROOT / "var"))

SUPERVISOR_PID_ENV = "STACK_SUPERVISOR_PID"
"""Set by `devstack.supervisor` to its own pid in each child's environment; a service stops
once that process is no longer its parent (`withdrawal_shared.runtime.stop_when_orphaned`)."""

DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'withdrawals.sqlite3'}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below its minimum {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def database_tls_env(database_url: str) -> DatabaseTls | None:
    """DATABASE_TLS_CA, DATABASE_TLS_CERT, DATABASE_TLS_KEY, checked against `database_url`
    (`withdrawal_shared.store_tls.DatabaseTls`); None when none is set."""
    return DatabaseTls.from_settings(
        database_url,
        ca=env_str("DATABASE_TLS_CA", ""),
        cert=env_str("DATABASE_TLS_CERT", ""),
        key=env_str("DATABASE_TLS_KEY", ""),
    )


class StoreEnv(TypedDict):
    database_url: str
    database_tls: DatabaseTls | None
    database_session_nice: bool
    redis_url: str
    redis_tls_ca: str
    redis_prefix: str


class ChainEnv(StoreEnv):
    chain: str
    chain_rpc_url: str


@dataclass(frozen=True)
class StoreSettings:
    """Settings every service with state shares: its database and its Redis."""

    database_url: str = DEFAULT_DATABASE_URL
    """DATABASE_URL: SQLAlchemy URL (mysql+pymysql://... or sqlite:///...)."""
    database_tls: DatabaseTls | None = None
    """DATABASE_TLS_CA, DATABASE_TLS_CERT, DATABASE_TLS_KEY: PEM files. With the CA set, the
    MySQL connection is TLS only, the server's certificate verified against that CA and its
    name against DATABASE_URL's host; with the certificate and key also set, the client
    presents them. Unset: PyMySQL's default (TLS if the server offers it, unverified). Refused
    with a SQLite URL (`withdrawal_shared.store_tls`)."""
    database_session_nice: bool = False
    """DATABASE_SESSION_NICE: true runs the MariaDB server's thread of each of this service's
    sessions at the service's own nice (`<SERVICE>_NICE`), when the server runs on this host
    and this process may change its threads' priority (`withdrawal_shared.db.session_nice`):
    a niced service then yields the CPU in the database too. The dev stack turns it on."""
    redis_url: str = DEFAULT_REDIS_URL
    """REDIS_URL: the task streams and the state-change events; `rediss://` for TLS (the
    server's certificate and name always verified)."""
    redis_tls_ca: str = ""
    """REDIS_TLS_CA: PEM file of the CA that signed Redis's certificate, trusted besides the
    system's CAs; only with a `rediss://` REDIS_URL."""
    redis_prefix: str = "aws:"
    """REDIS_PREFIX: prefix of every Redis key this stack uses."""

    @staticmethod
    def store_env() -> StoreEnv:
        d = StoreSettings()
        database_url = env_str("DATABASE_URL", d.database_url)
        redis_url = env_str("REDIS_URL", d.redis_url)
        redis_tls_ca = env_str("REDIS_TLS_CA", d.redis_tls_ca).strip()
        check_redis_url(redis_url, redis_tls_ca)
        return StoreEnv(
            database_url=database_url,
            database_tls=database_tls_env(database_url),
            database_session_nice=env_bool("DATABASE_SESSION_NICE", d.database_session_nice),
            redis_url=redis_url,
            redis_tls_ca=redis_tls_ca,
            redis_prefix=env_str("REDIS_PREFIX", d.redis_prefix),
        )


@dataclass(frozen=True)
class ChainSettings(StoreSettings):
    """Settings of a service that works on one chain through its JSON-RPC endpoint."""

    chain: str = "polygon"
    """CHAIN: the `chains.name` this service works on (one process per chain)."""
    chain_rpc_url: str = "http://127.0.0.1:8545"
    """CHAIN_RPC_URL: JSON-RPC endpoint of a node on that chain, or several separated by commas
    (in order of preference, the first is the primary): reads fail over between them, each
    behind its own circuit breaker, and signed transactions are sent to every healthy one
    (`withdrawal_shared.chain.rpc_pool.RpcPool`)."""

    @property
    def chain_rpc_urls(self) -> tuple[str, ...]:
        """CHAIN_RPC_URL split at commas, stripped, empty entries and repeats dropped."""
        urls: list[str] = []
        for part in self.chain_rpc_url.split(","):
            url = part.strip()
            if url and url not in urls:
                urls.append(url)
        if not urls:
            raise SettingsError(
                "CHAIN_RPC_URL is empty: set it to a JSON-RPC URL (or several, comma-separated)"
            )
        return tuple(urls)

    @staticmethod
    def chain_env() -> ChainEnv:
        d = ChainSettings()
        return ChainEnv(
            **StoreSettings.store_env(),
            chain=env_str("CHAIN", d.chain),
            chain_rpc_url=env_str("CHAIN_RPC_URL", d.chain_rpc_url),
        )
