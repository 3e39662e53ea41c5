"""The gateway's one settings object, read from the environment (defaults documented here)."""

from __future__ import annotations

from dataclasses import dataclass

from withdrawal_shared.settings import (
    SettingsError,
    StoreSettings,
    env_float,
    env_int,
    env_str,
)
from withdrawal_shared.webhooks.urls import allow_http_loopback


@dataclass(frozen=True)
class GatewaySettings(StoreSettings):
    grpc_host: str = "127.0.0.1"
    """GATEWAY_GRPC_HOST."""
    grpc_port: int = 50051
    """GATEWAY_GRPC_PORT: 0 picks a free port."""
    http_host: str = "127.0.0.1"
    """GATEWAY_HTTP_HOST."""
    http_port: int = 8080
    """GATEWAY_HTTP_PORT: REST/JSON and /openapi.json; 0 picks a free port."""
    max_body_bytes: int = 64 * 1024
    """GATEWAY_MAX_BODY_BYTES: larger REST bodies are refused with 413 (`BODY_TOO_LARGE`)."""
    batch_max_rows: int = 100_000
    """GATEWAY_BATCH_MAX_ROWS: most data rows in one CSV batch (`BATCH_TOO_LARGE` above)."""
    batch_max_bytes: int = 32 * 1024 * 1024
    """GATEWAY_BATCH_MAX_BYTES: largest CSV batch file (`BATCH_TOO_LARGE` above)."""
    db_threads: int = 16
    """GATEWAY_DB_THREADS: threads (and pooled connections) for database work."""
    create_batch_max: int = 64
    """GATEWAY_CREATE_BATCH_MAX: at most this many CreateWithdrawal requests share one
    transaction (group commit, see svc_gateway.batching)."""
    create_batch_in_flight: int = 2
    """GATEWAY_CREATE_BATCH_IN_FLIGHT: group-commit transactions running at once; requests
    arriving while all are busy form the next batch."""
    create_batch_wait_ms: float = 6.0
    """GATEWAY_CREATE_BATCH_WAIT_MS: while a group commit is running, linger up to this long
    before taking the next batch (larger batches, fewer transactions, at the price of at most
    that much latency under load; a lone request is never delayed); 0 batches only what queued
    up while the database was busy."""
    gil_switch_interval_ms: float = 0.5
    """GATEWAY_GIL_SWITCH_INTERVAL_MS: how long the event loop may hold the GIL before a
    database thread whose reply arrived gets it (Python's default is 5 ms)."""
    api_key_cache_seconds: float = 30.0
    """GATEWAY_API_KEY_CACHE_SECONDS: how long a verified key is trusted without a lookup.
    A revoked key is dropped at once through Redis (svc_gateway.revocations); while that
    subscription is down, a cached key is trusted for at most 2 s."""
    rate_limit_per_second: int = 1000
    """GATEWAY_RATE_LIMIT_PER_SECOND: requests per second per API key, unless the key or its
    partner has a limit of its own (GCRA in Redis, shared by every gateway process); 0: no
    default limit."""
    rate_limit_burst: int = 2000
    """GATEWAY_RATE_LIMIT_BURST: requests a key may send at once (the bucket's depth), for
    the default limit and for limits stored without a burst; 0: one second's worth."""
    admin_change_ttl_seconds: float = 7 * 24 * 3600.0
    """GATEWAY_ADMIN_CHANGE_TTL_SECONDS: a proposed admin change (four eyes) not confirmed or
    rejected within this long becomes EXPIRED and can no longer be applied (7 days)."""
    limits_cache_seconds: float = 5.0
    """GATEWAY_LIMITS_CACHE_SECONDS: how long the tiers and limits (not users' assignments,
    which every batch reads) are used without a re-read; a changed limit applies within this
    time. 0 re-reads them for every batch."""
    watch_poll_seconds: float = 2.0
    """GATEWAY_WATCH_POLL_SECONDS: WatchWithdrawal re-reads the database at least this often,
    so a lost pub/sub message only delays an event."""
    workers: int = 1
    """GATEWAY_WORKERS: processes serving the same ports (SO_REUSEPORT; the kernel spreads
    connections between them). One Python process is bound by its GIL to about one core; on
    a machine with cores to spare, more workers take more requests. Above 1 the ports must be
    fixed (not 0). In Kubernetes, prefer replicas."""
    worker_index: int = 0
    """GATEWAY_WORKER_INDEX: which of the GATEWAY_WORKERS processes this is (the first one
    sets it for the others it starts; not set by hand)."""
    shutdown_grace_seconds: float = 10.0
    """GATEWAY_SHUTDOWN_GRACE_SECONDS: in-flight RPCs get this long after SIGTERM."""
    portal_session_seconds: int = 1800
    """GATEWAY_PORTAL_SESSION_SECONDS: how long a portal sign-in lasts (30 min; the session
    in Redis and its cookie expire together, and are not extended by use)."""
    portal_explorer_tx_url: str = ""
    """GATEWAY_PORTAL_EXPLORER_TX_URL: a block explorer's transaction page with `{hash}` where
    the hash goes (e.g. `https://polygonscan.com/tx/{hash}`); the portal links a withdrawal's
    transaction hash to it. Empty (the default): the hash is shown as text."""
    webhooks_allow_http_loopback: bool = False
    """WEBHOOKS_ALLOW_HTTP_LOOPBACK (development only): webhook endpoints may be `http` URLs
    on loopback hosts (the sender reads the same variable)."""

    @property
    def shares_ports(self) -> bool:
        """Whether other worker processes serve the same ports (SO_REUSEPORT on each)."""
        return self.workers > 1 or self.worker_index > 0

    @classmethod
    def from_env(cls) -> GatewaySettings:
        d = cls()
        switch_ms = env_float("GATEWAY_GIL_SWITCH_INTERVAL_MS", d.gil_switch_interval_ms)
        if switch_ms <= 0:
            raise SettingsError(f"GATEWAY_GIL_SWITCH_INTERVAL_MS={switch_ms} must be above 0")
        workers = env_int("GATEWAY_WORKERS", d.workers, minimum=1)
        grpc_port = env_int("GATEWAY_GRPC_PORT", d.grpc_port, minimum=0)
        http_port = env_int("GATEWAY_HTTP_PORT", d.http_port, minimum=0)
        if workers > 1 and 0 in (grpc_port, http_port):
            raise SettingsError(
                f"GATEWAY_WORKERS={workers} needs fixed ports: set GATEWAY_GRPC_PORT and "
                "GATEWAY_HTTP_PORT (0 would give every worker a port of its own)"
            )
        return cls(
            **StoreSettings.store_env(),
            grpc_host=env_str("GATEWAY_GRPC_HOST", d.grpc_host),
            grpc_port=grpc_port,
            http_host=env_str("GATEWAY_HTTP_HOST", d.http_host),
            http_port=http_port,
            workers=workers,
            worker_index=env_int("GATEWAY_WORKER_INDEX", d.worker_index, minimum=0),
            max_body_bytes=env_int("GATEWAY_MAX_BODY_BYTES", d.max_body_bytes, minimum=1024),
            batch_max_rows=env_int("GATEWAY_BATCH_MAX_ROWS", d.batch_max_rows, minimum=1),
            batch_max_bytes=env_int("GATEWAY_BATCH_MAX_BYTES", d.batch_max_bytes, minimum=1024),
            db_threads=env_int("GATEWAY_DB_THREADS", d.db_threads, minimum=1),
            create_batch_max=env_int("GATEWAY_CREATE_BATCH_MAX", d.create_batch_max, minimum=1),
            create_batch_in_flight=env_int(
                "GATEWAY_CREATE_BATCH_IN_FLIGHT", d.create_batch_in_flight, minimum=1
            ),
            create_batch_wait_ms=env_float("GATEWAY_CREATE_BATCH_WAIT_MS", d.create_batch_wait_ms),
            gil_switch_interval_ms=switch_ms,
            api_key_cache_seconds=env_float(
                "GATEWAY_API_KEY_CACHE_SECONDS", d.api_key_cache_seconds
            ),
            rate_limit_per_second=env_int(
                "GATEWAY_RATE_LIMIT_PER_SECOND", d.rate_limit_per_second, minimum=0
            ),
            rate_limit_burst=env_int("GATEWAY_RATE_LIMIT_BURST", d.rate_limit_burst, minimum=0),
            limits_cache_seconds=env_float("GATEWAY_LIMITS_CACHE_SECONDS", d.limits_cache_seconds),
            watch_poll_seconds=env_float("GATEWAY_WATCH_POLL_SECONDS", d.watch_poll_seconds),
            admin_change_ttl_seconds=env_float(
                "GATEWAY_ADMIN_CHANGE_TTL_SECONDS", d.admin_change_ttl_seconds
            ),
            shutdown_grace_seconds=env_float(
                "GATEWAY_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            portal_session_seconds=env_int(
                "GATEWAY_PORTAL_SESSION_SECONDS", d.portal_session_seconds, minimum=60
            ),
            portal_explorer_tx_url=explorer_tx_url(
                env_str("GATEWAY_PORTAL_EXPLORER_TX_URL", d.portal_explorer_tx_url)
            ),
            webhooks_allow_http_loopback=allow_http_loopback(),
        )


def explorer_tx_url(template: str) -> str:
    """GATEWAY_PORTAL_EXPLORER_TX_URL checked: empty, or an `https://` URL holding `{hash}`
    once (SettingsError naming the variable otherwise)."""
    template = template.strip()
    if not template:
        return ""
    if not template.startswith("https://") or template.count("{hash}") != 1:
        raise SettingsError(
            "GATEWAY_PORTAL_EXPLORER_TX_URL must be an https:// URL with {hash} once, e.g. "
            "https://polygonscan.com/tx/{hash}, or empty"
        )
    return template
