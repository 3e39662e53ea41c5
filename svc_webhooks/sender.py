"""Sends due deliveries: signed POSTs, retries on a schedule, per-withdrawal order.

A delivery is due when it is PENDING, its `next_attempt_time` has come, no attempt of it is in
flight (its lease ran out or was released), its endpoint is enabled, and no earlier event of
the same withdrawal to the same endpoint is still PENDING: events of one withdrawal go in
sequence order, each waiting for the one before to succeed or fail for good; different
withdrawals go in parallel, up to `max_in_flight_per_endpoint` per endpoint and
`max_in_flight` in all.

Before sending, the due deliveries of a round are read and leased in the database in one
transaction (a compare-and-set on the lease), so a sender killed mid-attempt leaves leases
that run out, and those deliveries are sent again: at least once. Finished attempts are
recorded in batches: each attempt, its status code and latency go to the delivery log
(`webhook_attempts`) with its delivery's new state, in one transaction per batch (a batch of
successes: three statements whatever its size). The send loop runs a round as soon as there
is room and work (an attempt recorded, new deliveries fanned out), and otherwise waits up to
`poll_seconds`.

Each attempt checks the endpoint's URL again and refuses private, link-local and metadata
addresses (`withdrawal_shared.webhooks.urls`): an address literal before sending, a host name
in the HTTP client's resolver, which checks every address it returns and is asked on every
new connection (no DNS cache), so the address connected to is the address checked. Redirects
are not followed (a 3xx is a failed attempt). Signatures follow the Standard Webhooks
specification (`standardwebhooks`): one `v1,` signature per current secret, two during a
rotation's overlap; each sealed secret is decrypted and made a signer once, not per attempt.

With tracing on (`withdrawal_shared.tracing`), each attempt is a CLIENT span, the child of
the withdrawal's stored trace context (read with the round's leases); with tracing off the
round reads no context and an attempt makes no span.
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
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import Connection, Row, Table, and_, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from svc_webhooks.settings import WebhooksSettings
from withdrawal_shared import tracing
from withdrawal_shared.db.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    Withdrawal,
)
from withdrawal_shared.db.sql_text import insert_rows
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

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)
T = TypeVar("T")
# The hot path's statements run on the tables (Core), not through the ORM's compile state.
ATTEMPTS = cast(Table, WebhookAttempt.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)
ENDPOINTS = cast(Table, WebhookEndpoint.__table__)
WITHDRAWALS = cast(Table, Withdrawal.__table__)

USER_AGENT = "assetwithdrawal-webhooks/1"
RECORD_GATHER_SECONDS = 0.005


@dataclass(frozen=True)
class Leased:
    id: int
    endpoint_id: str
    partner_id: str
    url: str
    signers: tuple[Webhook, ...]
    """One per secret that signs now (two during a rotation's overlap)."""
    event_id: str
    withdrawal_id: str
    payload: str
    attempt: int
    traceparent: str | None = None
    """The withdrawal's stored trace context (read only while tracing is on)."""


@dataclass(frozen=True)
class _Endpoint:
    """What a round needs of an enabled endpoint."""

    id: str
    partner_id: str
    url: str
    signers: tuple[Webhook, ...]


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
        self._signers: dict[
            tuple[str, str, str | None, dt.datetime | None], tuple[Webhook, ...]
        ] = {}
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
                # No cookies kept: an endpoint's Set-Cookie neither reaches a later request
                # nor costs a jar lookup per attempt.
                cookie_jar=aiohttp.DummyCookieJar(),
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
        left to it. The due rows are read with everything an attempt needs; they are read
        again (their ids) only when the compare-and-set missed some."""
        now = utcnow()
        d = DELIVERIES.c
        earlier = DELIVERIES.alias("earlier").c
        blocked = exists().where(
            earlier.endpoint_id == d.endpoint_id,
            earlier.withdrawal_id == d.withdrawal_id,
            earlier.sequence < d.sequence,
            earlier.state == "PENDING",
        )
        per_endpoint = self.settings.max_in_flight_per_endpoint
        lease_free = (d.lease_until.is_(None)) | (d.lease_until < now)
        with self.sessions.begin() as session:
            conn = session.connection()
            # The enabled endpoints first, as a list: joined in the query, they make MariaDB
            # sort every PENDING row instead of walking the due index and stopping early.
            endpoints = {
                e.id: e
                for e in self._enabled_endpoints(conn, now)
                if in_flight.get(e.id, 0) < per_endpoint
            }
            if not endpoints:
                return []
            due = conn.execute(
                select(d.id, d.endpoint_id, d.event_id, d.withdrawal_id, d.payload, d.attempts)
                .where(
                    d.state == "PENDING",
                    d.next_attempt_time <= now,
                    lease_free,
                    d.endpoint_id.in_(list(endpoints)),
                    ~blocked,
                )
                .order_by(d.next_attempt_time, d.id)
                .limit(room * 2)
            ).all()
            chosen: list[Row[Any, Any, Any, Any, Any, Any]] = []
            counts = dict(in_flight)
            for row in due:
                if len(chosen) >= room:
                    break
                if counts.get(row.endpoint_id, 0) >= per_endpoint:
                    continue
                counts[row.endpoint_id] = counts.get(row.endpoint_id, 0) + 1
                chosen.append(row)
            if not chosen:
                return []
            mark = (now + dt.timedelta(seconds=self._lease_seconds)).replace(
                microsecond=random.randrange(1_000_000)  # noqa: S311 - a marker, not a secret
            )
            ids = [row.id for row in chosen]
            leased = conn.execute(
                update(DELIVERIES)
                .where(d.id.in_(ids), d.state == "PENDING", d.next_attempt_time <= now, lease_free)
                .values(lease_until=mark)
            )
            # Rows matched, not only changed (the MySQL dialects ask for FOUND_ROWS): all of
            # them, unless another sender leased or finished some since they were read.
            if int(leased.rowcount) != len(ids):
                ours = set(conn.scalars(select(d.id).where(d.id.in_(ids), d.lease_until == mark)))
                chosen = [row for row in chosen if row.id in ours]
            contexts: dict[str, str | None] = {}
            if tracing.enabled():
                withdrawals = {row.withdrawal_id for row in chosen if row.withdrawal_id}
                if withdrawals:
                    w = WITHDRAWALS.c
                    contexts = {
                        row.id: row.trace_context
                        for row in conn.execute(
                            select(w.id, w.trace_context).where(w.id.in_(withdrawals))
                        )
                    }
        leases: list[Leased] = []
        for row in chosen:
            endpoint = endpoints[row.endpoint_id]
            leases.append(
                Leased(
                    row.id,
                    endpoint.id,
                    endpoint.partner_id,
                    endpoint.url,
                    endpoint.signers,
                    row.event_id,
                    row.withdrawal_id,
                    row.payload,
                    row.attempts + 1,
                    contexts.get(row.withdrawal_id),
                )
            )
        return leases

    def _enabled_endpoints(self, conn: Connection, now: dt.datetime) -> list[_Endpoint]:
        e = ENDPOINTS.c
        rows = conn.execute(
            select(
                e.id,
                e.partner_id,
                e.url,
                e.secret,
                e.previous_secret,
                e.previous_secret_expire_time,
            ).where(e.state == "ENABLED")
        ).all()
        return [
            _Endpoint(
                row.id,
                row.partner_id,
                row.url,
                self._signers_for(
                    row.id,
                    row.secret,
                    row.previous_secret,
                    row.previous_secret_expire_time,
                    now,
                ),
            )
            for row in rows
        ]

    def _signers_for(
        self,
        endpoint_id: str,
        secret: str,
        previous: str | None,
        expires: dt.datetime | None,
        now: dt.datetime,
    ) -> tuple[Webhook, ...]:
        """The signers of the secrets that sign now: the current one, and the previous one
        during a rotation's overlap. Each sealed value is decrypted, and its key decoded,
        once (`Webhook` decodes its secret when made), not per attempt."""
        if previous is None or expires is None or expires <= now:
            previous, expires = None, None
        key = (endpoint_id, secret, previous, expires)
        signers = self._signers.get(key)
        if signers is None:
            sealed = [secret] if previous is None else [secret, previous]
            signers = tuple(Webhook(self.box.open(value)) for value in sealed)
            if len(self._signers) > 10_000:
                self._signers.clear()
            self._signers[key] = signers
        return signers

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, leased: Leased) -> None:
        with _attempt_span(leased) as span:
            try:
                result = await self.send(leased)
            except Exception as exc:  # recorded as a failed attempt, retried on the schedule
                log.exception("a webhook attempt failed", extra={"delivery": leased.id})
                result = Result(0, 0, f"{type(exc).__name__}"[:256])
            if span is not None:
                tracing.end_client_span(span, result.status_code, result.error)
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
        signature = " ".join(signer.sign(leased.event_id, now, body) for signer in leased.signers)
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
        (endpoints first, in id order, then the deliveries, then the delivery log).

        Successes are written with one UPDATE for all, a compare-and-set on PENDING; their
        states are read back only when it matched fewer rows than it was given (a delivery
        finished or deleted meanwhile). A batch of successes alone touches its endpoints
        with one UPDATE (`last_success_time`); a batch with other outcomes locks and loads
        its endpoints and those deliveries and applies each (`_apply`). The attempts go to
        the log with one multi-row INSERT."""
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
            endpoints: dict[str, WebhookEndpoint] = {}
            if others:
                endpoints = {
                    e.id: e
                    for e in session.scalars(
                        select(WebhookEndpoint)
                        .where(WebhookEndpoint.id.in_({lease.endpoint_id for lease, _ in batch}))
                        .order_by(WebhookEndpoint.id)
                        .with_for_update()
                    )
                }
            elif succeeded:
                session.connection().execute(
                    update(ENDPOINTS)
                    .where(ENDPOINTS.c.id.in_(sorted({lease.endpoint_id for lease, _ in batch})))
                    .values(last_success_time=now, failing_since=None)
                )
            if succeeded:
                states = self._succeed(session, [lease.id for lease, _ in succeeded], now)
                for leased, result in succeeded:
                    state = states.get(leased.id)
                    if state is None:  # deleted meanwhile
                        continue
                    if others:
                        endpoint = endpoints.get(leased.endpoint_id)
                        if endpoint is None:  # deleted meanwhile
                            continue
                        endpoint.last_success_time, endpoint.failing_since = now, None
                    attempt_row(leased, result, leased.attempt, state)
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
            insert_rows(session.connection(), ATTEMPTS, rows)
        _report(outcomes)

    @staticmethod
    def _succeed(session: Session, ids: list[int], now: dt.datetime) -> dict[int, str]:
        """Mark the deliveries SUCCEEDED (those still PENDING) with one UPDATE; their states
        after it, by id (none for a delivery deleted meanwhile)."""
        d, conn = DELIVERIES.c, session.connection()
        changed = conn.execute(
            update(DELIVERIES)
            .where(d.id.in_(ids), d.state == "PENDING")
            .values(state="SUCCEEDED", attempts=d.attempts + 1, end_time=now, lease_until=None)
        )
        # Rows matched (the MySQL dialects ask for FOUND_ROWS): when all of them, every one
        # was PENDING and is SUCCEEDED by this attempt. Otherwise the states as they are
        # now: SUCCEEDED (by this UPDATE or an earlier attempt), FAILED, or gone.
        if int(changed.rowcount) == len(set(ids)):
            return dict.fromkeys(ids, "SUCCEEDED")
        return {
            row.id: row.state for row in conn.execute(select(d.id, d.state).where(d.id.in_(ids)))
        }

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


_NO_SPAN: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def _attempt_span(leased: Leased) -> contextlib.AbstractContextManager[Span | None]:
    """The attempt's CLIENT span, the child of its withdrawal's stored trace context (a trace
    of its own without one); nothing when tracing is off."""
    if not tracing.enabled():
        return _NO_SPAN
    attributes: dict[str, Any] = {
        "webhook.event_id": leased.event_id,
        "webhook.endpoint_id": leased.endpoint_id,
        "webhook.delivery_id": leased.id,
        "webhook.attempt": leased.attempt,
        "http.request.method": "POST",
    }
    if leased.withdrawal_id:
        attributes["withdrawal.id"] = leased.withdrawal_id
    return tracing.delivery_span("webhook attempt", leased.traceparent, attributes)


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


def _report(outcomes: list[tuple[Leased, Result, str]]) -> None:
    """Recorded attempts to the metrics (one call per outcome) and the log (every attempt
    but the successes, which only at DEBUG)."""
    for outcome, count in Counter(outcome for _, _, outcome in outcomes).items():
        WEBHOOK_ATTEMPTS.add(count, {"outcome": outcome})
    debug = log.isEnabledFor(logging.DEBUG)
    for leased, result, outcome in outcomes:
        if outcome == "SUCCEEDED" and not debug:
            continue
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
