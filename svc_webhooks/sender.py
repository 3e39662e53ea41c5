"""Sends due deliveries: signed POSTs, retries on a schedule, per-withdrawal order.

A delivery is due when it is PENDING, its `next_attempt_time` has come, no attempt of it is in
flight (its lease ran out or was released), its endpoint is enabled, and no earlier event of
the same withdrawal to the same endpoint is still PENDING: events of one withdrawal go in
sequence order, each waiting for the one before to succeed or fail for good; different
withdrawals go in parallel, up to `max_in_flight_per_endpoint` per endpoint and
`max_in_flight` in all.

Before sending, the due deliveries of a round are leased in the database in one transaction (a
compare-and-set), so a sender killed mid-attempt leaves leases that run out, and those
deliveries are sent again: at least once. Finished attempts are recorded in batches: each
attempt, its status code and latency go to the delivery log (`webhook_attempts`) with its
delivery's new state, in one transaction per batch. The send loop runs a round as soon as
there is room and work (an attempt recorded, new deliveries fanned out), and otherwise waits
up to `poll_seconds`.

Each attempt checks the endpoint's URL again and refuses private, link-local and metadata
addresses (`withdrawal_shared.webhooks.urls`): an address literal before sending, a host name
in the HTTP client's resolver, which checks every address it returns and is asked on every
new connection (no DNS cache), so the address connected to is the address checked. Redirects
are not followed (a 3xx is a failed attempt). Signatures follow the Standard Webhooks
specification (`standardwebhooks`): one `v1,` signature per current secret, two during a
rotation's overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import and_, exists, func, insert, select, update
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
from withdrawal_shared.webhooks.urls import (
    EndpointUrl,
    UrlRefused,
    parse_url,
    refused_address,
    resolve_checked,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "assetwithdrawal-webhooks/1"
RECORD_GATHER_SECONDS = 0.005


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
    """Leases due deliveries in batches, sends each in a task of its own, and records the
    finished attempts in batches (one transaction per batch, however many finished)."""

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
        self._finished: list[tuple[Leased, Result]] = []
        self._recording: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._secrets: dict[tuple[str, str, str | None, dt.datetime | None], tuple[str, ...]]
        self._secrets = {}
        self._url_checks: dict[str, str | None] = {}
        self._client: aiohttp.ClientSession | None = None
        self._lease_seconds = settings.timeout_seconds * 2 + 5

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.settings.max_in_flight,
                    limit_per_host=self.settings.max_in_flight_per_endpoint,
                    use_dns_cache=False,
                    resolver=CheckedResolver(self.settings.allow_http_loopback),
                ),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
                headers={"user-agent": USER_AGENT},
                trust_env=False,
                auto_decompress=False,
            )
        return self._client

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    def wake(self) -> None:
        """Something may be due: new deliveries, or room after attempts were recorded."""
        self._wake.set()

    async def wait_for_work(self, timeout: float) -> None:
        """Until `wake()` or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    # -- one round ---------------------------------------------------------------------------

    async def round(self) -> tuple[int, int]:
        """Lease and start what is due, within the limits: (started, room there was)."""
        self._wake.clear()
        room = self.settings.max_in_flight - self.in_flight
        if room <= 0 or (self.in_flight and room < self.settings.max_in_flight // 4):
            return 0, 0  # a round for a quarter of the room at least: fewer, larger leases
        leased = await self._db(self._lease_due, room, dict(self._in_flight))
        for item in leased:
            self._in_flight[item.endpoint_id] = self._in_flight.get(item.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(item), name=f"webhook-{item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(leased), room

    def _lease_due(self, room: int, in_flight: dict[str, int]) -> list[Leased]:
        """Lease up to `room` due deliveries (at most `max_in_flight_per_endpoint` in flight
        per endpoint) in one transaction: a compare-and-set on their leases, marked with a
        lease time of this round's own, so that rows another sender leased meanwhile are
        left to it."""
        now = utcnow()
        earlier = aliased(WebhookDelivery)
        blocked = exists().where(
            earlier.endpoint_id == WebhookDelivery.endpoint_id,
            earlier.withdrawal_id == WebhookDelivery.withdrawal_id,
            earlier.sequence < WebhookDelivery.sequence,
            earlier.state == "PENDING",
        )
        per_endpoint = self.settings.max_in_flight_per_endpoint
        with self.sessions() as session:
            # The enabled endpoints first, as a list: joined in the query, they make MariaDB
            # sort every PENDING row instead of walking the due index and stopping early.
            enabled = [
                endpoint_id
                for endpoint_id in session.scalars(
                    select(WebhookEndpoint.id).where(WebhookEndpoint.state == "ENABLED")
                )
                if in_flight.get(endpoint_id, 0) < per_endpoint
            ]
            if not enabled:
                return []
            due = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.state == "PENDING",
                    WebhookDelivery.next_attempt_time <= now,
                    (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now),
                    WebhookDelivery.endpoint_id.in_(enabled),
                    ~blocked,
                )
                .order_by(WebhookDelivery.next_attempt_time, WebhookDelivery.id)
                .limit(room * 2)
            ).all()
        chosen: list[int] = []
        counts = dict(in_flight)
        for row in due:
            if len(chosen) >= room:
                break
            if counts.get(row.endpoint_id, 0) >= per_endpoint:
                continue
            counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
            chosen.append(row.id)
        if not chosen:
            return []
        mark = (now + dt.timedelta(seconds=self._lease_seconds)).replace(
            microsecond=random.randrange(1_000_000)  # noqa: S311 - a marker, not a secret
        )
        with self.sessions.begin() as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id.in_(chosen),
                    WebhookDelivery.state == "PENDING",
                    (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now),
                )
                .values(lease_until=mark)
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.endpoint_id,
                    WebhookDelivery.event_id,
                    WebhookDelivery.payload,
                    WebhookDelivery.attempts,
                ).where(WebhookDelivery.id.in_(chosen), WebhookDelivery.lease_until == mark)
            ).all()
            endpoints = {
                e.id: e
                for e in session.scalars(
                    select(WebhookEndpoint).where(
                        WebhookEndpoint.id.in_({r.endpoint_id for r in rows})
                    )
                )
            }
            return [
                Leased(
                    r.id,
                    r.endpoint_id,
                    endpoints[r.endpoint_id].partner_id,
                    endpoints[r.endpoint_id].url,
                    self._open_secrets(endpoints[r.endpoint_id], now),
                    r.event_id,
                    r.payload,
                    r.attempts + 1,
                )
                for r in sorted(rows, key=lambda r: chosen.index(r.id))
            ]

    def _open_secrets(self, endpoint: WebhookEndpoint, now: dt.datetime) -> tuple[str, ...]:
        """The secrets that sign now: the current one, and the previous one during a
        rotation's overlap (decrypted once per sealed value)."""
        previous = endpoint.previous_secret
        expires = endpoint.previous_secret_expire_time
        if previous is None or expires is None or expires <= now:
            previous, expires = None, None
        key = (endpoint.id, endpoint.secret, previous, expires)
        opened = self._secrets.get(key)
        if opened is None:
            values = [self.box.open(endpoint.secret)]
            if previous is not None:
                values.append(self.box.open(previous))
            opened = tuple(values)
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            self._secrets[key] = opened
        return opened

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, leased: Leased) -> None:
        try:
            result = await self.send(leased)
        except Exception as exc:  # recorded as a failed attempt, retried on the schedule
            log.exception("a webhook attempt failed", extra={"delivery": leased.id})
            result = Result(0, 0, f"{type(exc).__name__}"[:256])
        self._finished.append((leased, result))
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._record_finished(), name="webhook-record")

    async def _record_finished(self) -> None:
        """Record what finished, in batches, until nothing is left; then free the room."""
        await asyncio.sleep(RECORD_GATHER_SECONDS)  # let a few more finish: larger batches
        while self._finished:
            batch, self._finished = self._finished, []
            try:
                await self._db(self._record_many, batch)
            except Exception:  # the leases run out and the deliveries are sent again
                log.exception("recording webhook attempts failed", extra={"count": len(batch)})
            for leased, _ in batch:
                left = self._in_flight.get(leased.endpoint_id, 1) - 1
                if left > 0:
                    self._in_flight[leased.endpoint_id] = left
                else:
                    self._in_flight.pop(leased.endpoint_id, None)
            self.wake()

    def _url_refused(self, url: str) -> str | None:
        """Why the URL's form or its address literal is refused, or None (a host name's
        addresses are checked by the resolver). No lookup: remembered per URL."""
        if url in self._url_checks:
            return self._url_checks[url]
        allow = self.settings.allow_http_loopback
        why: str | None = None
        try:
            endpoint = parse_url(url, allow_loopback=allow)
            literal = _literal(endpoint.host)
            if literal is not None:
                reason = refused_address(literal, allow_loopback=allow)
                if reason is not None:
                    why = f"host {endpoint.host!r} resolves to {literal}, {reason}"
        except UrlRefused as exc:
            why = str(exc)
        if len(self._url_checks) > 10_000:
            self._url_checks.clear()
        self._url_checks[url] = why
        return why

    async def send(self, leased: Leased) -> Result:
        started = time.monotonic()
        refused = self._url_refused(leased.url)
        if refused is not None:
            return Result(0, 0, f"refused: the URL {refused}"[:256])
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
            async with self._session().post(
                leased.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status, error = response.status, ""
        except UrlRefused as exc:
            return Result(0, 0, f"refused: the URL {exc}"[:256])
        except TimeoutError:
            status, error = 0, "timed out"
        except aiohttp.ClientError as exc:
            status, error = 0, f"{type(exc).__name__}: {str(exc)[:200]}"
        elapsed = time.monotonic() - started
        WEBHOOK_ATTEMPT_SECONDS.record(elapsed)
        return Result(status, int(elapsed * 1000), error)

    def _delay(self, attempts: int) -> float:
        base = self.settings.retry_schedule[attempts - 1]
        spread = base * self.settings.jitter_pct / 100
        return max(0.0, base + random.uniform(-spread, spread))  # noqa: S311 - jitter, not a secret

    def _record_many(self, batch: list[tuple[Leased, Result]]) -> None:
        """Each attempt, its delivery's new state and its endpoint's, in one transaction
        (endpoints locked first, in id order, then the deliveries). Successes are written with
        one UPDATE for all; the rest one by one (`_apply`)."""
        now = utcnow()
        outcomes: list[tuple[Leased, Result, str]] = []
        rows: list[dict[str, Any]] = []

        def attempt_row(leased: Leased, result: Result, attempt: int, outcome: str) -> None:
            outcomes.append((leased, result, outcome))
            rows.append(
                {
                    "delivery_id": leased.id,
                    "endpoint_id": leased.endpoint_id,
                    "attempt": attempt,
                    "attempt_time": now,
                    "status_code": result.status_code,
                    "latency_ms": result.latency_ms,
                    "outcome": outcome,
                    "error": result.error[:256],
                }
            )

        succeeded = [(lease, r) for lease, r in batch if 200 <= r.status_code < 300]
        others = [(lease, r) for lease, r in batch if not 200 <= r.status_code < 300]
        with self.sessions.begin() as session:
            endpoints = {
                e.id: e
                for e in session.scalars(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.id.in_({lease.endpoint_id for lease, _ in batch}))
                    .order_by(WebhookEndpoint.id)
                    .with_for_update()
                )
            }
            if succeeded:
                states = dict(
                    session.execute(
                        select(WebhookDelivery.id, WebhookDelivery.state).where(
                            WebhookDelivery.id.in_([lease.id for lease, _ in succeeded])
                        )
                    ).all()
                )
                pending = [lease.id for lease, _ in succeeded if states.get(lease.id) == "PENDING"]
                if pending:
                    session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id.in_(pending), WebhookDelivery.state == "PENDING")
                        .values(
                            state="SUCCEEDED",
                            attempts=WebhookDelivery.attempts + 1,
                            end_time=now,
                            lease_until=None,
                        )
                        .execution_options(synchronize_session=False)
                    )
                for leased, result in succeeded:
                    state = states.get(leased.id)
                    endpoint = endpoints.get(leased.endpoint_id)
                    if state is None or endpoint is None:  # deleted meanwhile
                        continue
                    endpoint.last_success_time, endpoint.failing_since = now, None
                    outcome = "SUCCEEDED" if state == "PENDING" else str(state)
                    attempt_row(leased, result, leased.attempt, outcome)
            if others:
                deliveries = {
                    d.id: d
                    for d in session.scalars(
                        select(WebhookDelivery)
                        .where(WebhookDelivery.id.in_([lease.id for lease, _ in others]))
                        .order_by(WebhookDelivery.id)
                        .with_for_update()
                    )
                }
                for leased, result in others:
                    delivery = deliveries.get(leased.id)
                    endpoint = endpoints.get(leased.endpoint_id)
                    if delivery is None or endpoint is None:  # deleted meanwhile
                        continue
                    outcome = self._apply(session, delivery, endpoint, result, now)
                    attempt_row(leased, result, delivery.attempts, outcome)
            if rows:
                session.execute(insert(WebhookAttempt), rows)
        for leased, result, outcome in outcomes:
            WEBHOOK_ATTEMPTS.add(1, {"outcome": outcome})
            log.log(
                logging.DEBUG if outcome == "SUCCEEDED" else logging.INFO,
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

    def _apply(
        self,
        session: Session,
        delivery: WebhookDelivery,
        endpoint: WebhookEndpoint,
        result: Result,
        now: dt.datetime,
    ) -> str:
        """One attempt's effect on its delivery and endpoint; its outcome."""
        ok = 200 <= result.status_code < 300
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
        if disable is not None and endpoint.state == "ENABLED":
            endpoint.state, endpoint.state_reason, endpoint.update_time = "DISABLED", disable, now
            notify_disabled(session, endpoint, disable, now)
            WEBHOOK_ENDPOINTS_DISABLED.add(1, {"reason": disable})
            log.warning(
                "webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": disable}
            )
        return outcome

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
        """Let the attempts in flight finish (up to `grace`) and record them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in set(self._tasks):
            task.cancel()
        if self._recording is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._recording, grace)
        if self._client is not None:
            await self._client.close()


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class CheckedResolver(AbstractResolver):
    """Resolves a host for the HTTP client and refuses it unless every address is allowed
    (`resolve_checked`): the connection goes to an address that was checked."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        endpoint = EndpointUrl("", host, port, "")
        addresses = await resolve_checked(endpoint, allow_loopback=self.allow_loopback)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


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
