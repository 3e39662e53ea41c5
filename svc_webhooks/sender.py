"""Sends due deliveries: signed POSTs, retries on a schedule, per-withdrawal order.

A delivery is due when it is PENDING, its `next_attempt_time` has come, no attempt of it is in
flight (its lease ran out or was released), its endpoint is enabled, and no earlier event of
the same withdrawal to the same endpoint is still PENDING: events of one withdrawal go in
sequence order, each waiting for the one before to succeed or fail for good; different
withdrawals go in parallel, up to `max_in_flight_per_endpoint` per endpoint.

Before sending, the delivery is leased in the database (a compare-and-set), so a sender killed
mid-attempt leaves a lease that runs out, and the delivery is sent again: at least once. The
attempt, its status code and latency go to the delivery log (`webhook_attempts`) with the
delivery's new state in one transaction.

Each attempt resolves the endpoint's host again and refuses private, link-local and metadata
addresses (`withdrawal_shared.webhooks.urls`); redirects are not followed (a 3xx is a failed
attempt). Signatures follow the Standard Webhooks specification (`standardwebhooks`): one
`v1,` signature per current secret, two during a rotation's overlap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker
from standardwebhooks.webhooks import Webhook

from svc_webhooks.settings import WebhooksSettings
from withdrawal_shared.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.metrics import (
    WEBHOOK_ATTEMPT_SECONDS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_BACKLOG,
    WEBHOOK_ENDPOINTS_DISABLED,
    WEBHOOK_LAG,
)
from withdrawal_shared.webhooks import events
from withdrawal_shared.webhooks.secrets import SecretBox
from withdrawal_shared.webhooks.urls import UrlRefused, parse_url, resolve_checked

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "assetwithdrawal-webhooks/1"


@dataclass(frozen=True)
class Due:
    id: int
    endpoint_id: str
    withdrawal_id: str


@dataclass(frozen=True)
class Leased:
    id: int
    endpoint_id: str
    partner_id: str
    url: str
    secrets: tuple[str, ...]
    event_id: str
    payload: str
    attempt: int


@dataclass(frozen=True)
class Result:
    status_code: int
    latency_ms: int
    error: str


class Sender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: ThreadPoolExecutor,
        settings: WebhooksSettings,
        box: SecretBox,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.settings = settings
        self.box = box
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )
        self._lease_seconds = settings.timeout_seconds * 2 + 5

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- one round ---------------------------------------------------------------------------

    async def round(self) -> int:
        """Lease and start what is due, within the limits; the number started."""
        room = self.settings.max_in_flight - len(self._tasks)
        if room <= 0:
            return 0
        due = await self._db(self._due, room * 4)
        started = 0
        for item in due:
            if started >= room:
                break
            if self._in_flight.get(item.endpoint_id, 0) >= self.settings.max_in_flight_per_endpoint:
                continue
            leased = await self._db(self._lease, item.id)
            if leased is None:
                continue
            self._in_flight[item.endpoint_id] = self._in_flight.get(item.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(leased), name=f"webhook-{item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    def _due(self, limit: int) -> list[Due]:
        now = utcnow()
        earlier = aliased(WebhookDelivery)
        blocked = exists().where(
            earlier.endpoint_id == WebhookDelivery.endpoint_id,
            earlier.withdrawal_id == WebhookDelivery.withdrawal_id,
            earlier.sequence < WebhookDelivery.sequence,
            earlier.state == "PENDING",
        )
        with self.sessions() as session:
            rows = session.execute(
                select(
                    WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.withdrawal_id
                )
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.state == "PENDING",
                    WebhookDelivery.next_attempt_time <= now,
                    (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now),
                    WebhookEndpoint.state == "ENABLED",
                    ~blocked,
                )
                .order_by(WebhookDelivery.next_attempt_time, WebhookDelivery.id)
                .limit(limit)
            ).all()
        return [Due(r.id, r.endpoint_id, r.withdrawal_id) for r in rows]

    def _lease(self, delivery_id: int) -> Leased | None:
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.state == "PENDING",
                    (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now),
                )
                .values(lease_until=now + dt.timedelta(seconds=self._lease_seconds))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            assert endpoint is not None
            secrets = [self.box.open(endpoint.secret)]
            if (
                endpoint.previous_secret is not None
                and endpoint.previous_secret_expire_time is not None
                and endpoint.previous_secret_expire_time > now
            ):
                secrets.append(self.box.open(endpoint.previous_secret))
            return Leased(
                delivery.id,
                endpoint.id,
                endpoint.partner_id,
                endpoint.url,
                tuple(secrets),
                delivery.event_id,
                delivery.payload,
                delivery.attempts + 1,
            )

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, leased: Leased) -> None:
        try:
            result = await self.send(leased)
            await self._db(self._record, leased, result)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("recording a webhook attempt failed", extra={"delivery": leased.id})
        finally:
            left = self._in_flight.get(leased.endpoint_id, 1) - 1
            if left > 0:
                self._in_flight[leased.endpoint_id] = left
            else:
                self._in_flight.pop(leased.endpoint_id, None)

    async def send(self, leased: Leased) -> Result:
        started = time.monotonic()
        allow = self.settings.allow_http_loopback
        try:
            endpoint = parse_url(leased.url, allow_loopback=allow)
            await resolve_checked(endpoint, allow_loopback=allow)
        except UrlRefused as exc:
            return Result(0, 0, f"refused: the URL {exc}"[:256])
        now = dt.datetime.now(dt.UTC)
        body = leased.payload.encode()
        signature = " ".join(
            Webhook(secret).sign(leased.event_id, now, body) for secret in leased.secrets
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": leased.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            response = await self._client.post(leased.url, content=body, headers=headers)
            await response.aclose()
            status, error = response.status_code, ""
        except httpx.TimeoutException:
            status, error = 0, "timed out"
        except httpx.HTTPError as exc:
            status, error = 0, f"{type(exc).__name__}: {str(exc)[:200]}"
        elapsed = time.monotonic() - started
        WEBHOOK_ATTEMPT_SECONDS.record(elapsed)
        return Result(status, int(elapsed * 1000), error)

    def _delay(self, attempts: int) -> float:
        base = self.settings.retry_schedule[attempts - 1]
        spread = base * self.settings.jitter_pct / 100
        return max(0.0, base + random.uniform(-spread, spread))  # noqa: S311 - jitter, not a secret

    def _record(self, leased: Leased, result: Result) -> None:
        now = utcnow()
        ok = 200 <= result.status_code < 300
        with self.sessions.begin() as session:
            delivery = session.get(WebhookDelivery, leased.id, with_for_update=True)
            endpoint = session.get(WebhookEndpoint, leased.endpoint_id, with_for_update=True)
            if delivery is None or endpoint is None:  # deleted meanwhile
                return
            delivery.lease_until = None
            delivery.attempts += 1
            disable: str | None = None
            if delivery.state != "PENDING":
                outcome = delivery.state
            elif ok:
                outcome = "SUCCEEDED"
                delivery.state, delivery.end_time = "SUCCEEDED", now
                endpoint.last_success_time, endpoint.failing_since = now, None
            elif result.status_code == 410:
                outcome = "FAILED"
                delivery.state, delivery.end_time = "FAILED", now
                disable = "ENDPOINT_GONE"
            else:
                endpoint.failing_since = endpoint.failing_since or now
                if delivery.attempts > len(self.settings.retry_schedule):
                    outcome = "FAILED"
                    delivery.state, delivery.end_time = "FAILED", now
                    failing_for = (now - endpoint.failing_since).total_seconds()
                    if failing_for >= self.settings.schedule_seconds * 0.8:
                        disable = "FAILING"
                else:
                    outcome = "RETRYING"
                    delivery.next_attempt_time = now + dt.timedelta(
                        seconds=self._delay(delivery.attempts)
                    )
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    endpoint_id=endpoint.id,
                    attempt=delivery.attempts,
                    attempt_time=now,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    outcome=outcome,
                    error=result.error[:256],
                )
            )
            if disable is not None and endpoint.state == "ENABLED":
                endpoint.state, endpoint.state_reason, endpoint.update_time = (
                    "DISABLED",
                    disable,
                    now,
                )
                notify_disabled(session, endpoint, disable, now)
                WEBHOOK_ENDPOINTS_DISABLED.add(1, {"reason": disable})
                log.warning(
                    "webhook endpoint disabled",
                    extra={"endpoint_id": endpoint.id, "reason": disable},
                )
        WEBHOOK_ATTEMPTS.add(1, {"outcome": outcome})
        log.info(
            "webhook attempt",
            extra={
                "delivery": leased.id,
                "event_id": leased.event_id,
                "endpoint_id": leased.endpoint_id,
                "attempt": leased.attempt,
                "status_code": result.status_code,
                "latency_ms": result.latency_ms,
                "outcome": outcome,
                "error": result.error,
            },
        )

    # -- gauges and stop ---------------------------------------------------------------------

    def measure(self) -> tuple[int, float]:
        """(deliveries PENDING, age in seconds of the oldest due one), also set as gauges."""
        now = utcnow()
        with self.sessions() as session:
            backlog, oldest = session.execute(
                select(
                    func.count(),
                    func.min(WebhookDelivery.next_attempt_time),
                ).where(WebhookDelivery.state == "PENDING")
            ).one()
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        WEBHOOK_BACKLOG.set(int(backlog))
        WEBHOOK_LAG.set(lag)
        return int(backlog), lag

    async def stop(self, grace: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in set(self._tasks):
            task.cancel()
        await self._client.aclose()


def notify_disabled(
    session: Session, endpoint: WebhookEndpoint, reason: str, now: dt.datetime
) -> int:
    """A `webhook_endpoint.disabled` event to the partner's other enabled endpoints that
    want it; the number of deliveries made."""
    others = session.scalars(
        select(WebhookEndpoint).where(
            and_(
                WebhookEndpoint.partner_id == endpoint.partner_id,
                WebhookEndpoint.state == "ENABLED",
                WebhookEndpoint.id != endpoint.id,
            )
        )
    ).all()
    event_id = f"evt_{new_ulid()}"
    payload = events.encode(
        event_id,
        events.ENDPOINT_DISABLED,
        now,
        {"webhookEndpoint": f"webhookEndpoints/{endpoint.id}", "reason": reason},
    )
    made = 0
    for other in others:
        if not events.wants(other.event_types, events.ENDPOINT_DISABLED):
            continue
        session.add(
            WebhookDelivery(
                endpoint_id=other.id,
                event_id=event_id,
                event_type=events.ENDPOINT_DISABLED,
                withdrawal_id="",
                sequence=0,
                payload=payload,
                state="PENDING",
                attempts=0,
                next_attempt_time=now,
                lease_until=None,
                occur_time=now,
                create_time=now,
            )
        )
        made += 1
    return made
