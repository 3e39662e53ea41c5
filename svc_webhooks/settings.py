"""The webhook sender's one settings object, read from the environment (defaults here)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from svc_webhooks.errors import ScheduleError
from withdrawal_shared.settings import StoreSettings, env_float, env_int, env_str
from withdrawal_shared.webhooks.urls import allow_http_loopback

DEFAULT_SCHEDULE = "5s,30s,2m,5m,15m,30m,1h,2h,4h,8h,8h"
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_STEP = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smh]?)$")


def parse_schedule(text: str) -> tuple[float, ...]:
    """`5s,30s,2m,1h` -> the delays in seconds before the 2nd, 3rd, ... attempt."""
    steps: list[float] = []
    for part in text.split(","):
        match = _STEP.match(part.strip())
        if match is None:
            raise ScheduleError(
                f"WEBHOOKS_RETRY_SCHEDULE: {part.strip()!r} is not a delay such as 30s, 2m or 1h"
            )
        steps.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(steps)


@dataclass(frozen=True)
class WebhooksSettings(StoreSettings):
    grpc_host: str = "127.0.0.1"
    """WEBHOOKS_GRPC_HOST."""
    grpc_port: int = 50055
    """WEBHOOKS_GRPC_PORT: gRPC health and reflection only; 0 picks a free port."""
    poll_seconds: float = 0.5
    """WEBHOOKS_POLL_SECONDS: pause between two reads of the outbox and of due deliveries."""
    outbox_batch: int = 500
    """WEBHOOKS_OUTBOX_BATCH: audit rows read from the outbox per poll at most."""
    gap_grace_seconds: float = 120.0
    """WEBHOOKS_OUTBOX_GAP_GRACE_SECONDS: an audit id below the newest one read that is still
    missing after this long is taken as never committed (a rolled-back insert) and skipped.
    Must exceed the longest transaction that writes audit rows."""
    retry_schedule: tuple[float, ...] = parse_schedule(DEFAULT_SCHEDULE)
    """WEBHOOKS_RETRY_SCHEDULE: the delays before each retry (`5s,30s,2m,...`; about a day
    in all by default). After the last, the delivery is FAILED."""
    jitter_pct: int = 20
    """WEBHOOKS_RETRY_JITTER_PCT: each delay is drawn from +- this percentage of it."""
    timeout_seconds: float = 5.0
    """WEBHOOKS_TIMEOUT_SECONDS: one attempt's timeout (connect, send, answer)."""
    max_in_flight: int = 32
    """WEBHOOKS_MAX_IN_FLIGHT: attempts in flight at once, all endpoints together."""
    max_in_flight_per_endpoint: int = 4
    """WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT: attempts in flight at once to one endpoint."""
    shutdown_grace_seconds: float = 5.0
    """WEBHOOKS_SHUTDOWN_GRACE_SECONDS: attempts in flight get this long after SIGTERM."""
    allow_http_loopback: bool = False
    """WEBHOOKS_ALLOW_HTTP_LOOPBACK (development only): `http` URLs and loopback addresses
    are allowed. Read by the gateway too."""

    @property
    def schedule_seconds(self) -> float:
        return sum(self.retry_schedule)

    @classmethod
    def from_env(cls) -> WebhooksSettings:
        d = cls()
        return cls(
            **StoreSettings.store_env(),
            grpc_host=env_str("WEBHOOKS_GRPC_HOST", d.grpc_host),
            grpc_port=env_int("WEBHOOKS_GRPC_PORT", d.grpc_port, minimum=0),
            poll_seconds=env_float("WEBHOOKS_POLL_SECONDS", d.poll_seconds),
            outbox_batch=env_int("WEBHOOKS_OUTBOX_BATCH", d.outbox_batch, minimum=1),
            gap_grace_seconds=env_float("WEBHOOKS_OUTBOX_GAP_GRACE_SECONDS", d.gap_grace_seconds),
            retry_schedule=parse_schedule(env_str("WEBHOOKS_RETRY_SCHEDULE", DEFAULT_SCHEDULE)),
            jitter_pct=env_int("WEBHOOKS_RETRY_JITTER_PCT", d.jitter_pct, minimum=0),
            timeout_seconds=env_float("WEBHOOKS_TIMEOUT_SECONDS", d.timeout_seconds),
            max_in_flight=env_int("WEBHOOKS_MAX_IN_FLIGHT", d.max_in_flight, minimum=1),
            max_in_flight_per_endpoint=env_int(
                "WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT", d.max_in_flight_per_endpoint, minimum=1
            ),
            shutdown_grace_seconds=env_float(
                "WEBHOOKS_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            allow_http_loopback=allow_http_loopback(),
        )
