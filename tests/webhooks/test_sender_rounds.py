"""The sender's rounds in-process on real MariaDB, against a receiver on loopback: each attempt
is a CLIENT span, the child of its withdrawal's stored trace context, with the event, the
endpoint, the attempt number and the status code (none with tracing off); a batch of
successes whose deliveries finished meanwhile records their states as they are; a batch mixing
successes and failures records each (retry scheduled, endpoint failing); deliveries leased by
one sender are not leased by another; the rendered multi-row INSERT stores what it is given."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from svc_webhooks.sender import ATTEMPTS, Leased, Result, Sender
from svc_webhooks.settings import WebhooksSettings
from tests.support.databases import mariadb_database
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared import tracing
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    Token,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    Withdrawal,
)
from withdrawal_shared.db.sql_text import insert_rows
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.webhooks.secrets import SecretBox, new_secret

PARTNER = "rounds-partner"
STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BOX = SecretBox(b"r" * 32)


class _Hook(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 204
    bodies: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).bodies.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def hook_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with mariadb_database() as url:
        eng = make_engine(url, pool_size=4)
        yield eng
        eng.dispose()


@pytest.fixture(scope="module")
def sessions(engine: Engine) -> sessionmaker[Session]:
    made = make_sessionmaker(engine)
    with made.begin() as session:
        ensure_partner(session, PARTNER)
    return made


@pytest.fixture
def secret(sessions: sessionmaker[Session], hook_url: str) -> Iterator[tuple[str, str]]:
    """A fresh endpoint on the receiver (the only one enabled): (its id, its secret)."""
    plain = new_secret()
    endpoint_id = new_ulid()
    now = utcnow()
    with sessions.begin() as session:
        session.execute(update(WebhookEndpoint).values(state="DISABLED"))
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                partner_id=PARTNER,
                url=hook_url,
                description="",
                event_types="",
                state="ENABLED",
                state_reason="",
                secret=BOX.seal(plain),
                previous_secret=None,
                previous_secret_expire_time=None,
                request_id=None,
                create_time=now,
                update_time=now,
            )
        )
    _Hook.status, _Hook.bodies = 204, []
    yield endpoint_id, plain


def _deliveries(
    sessions: sessionmaker[Session], endpoint_id: str, count: int, trace_context: str | None
) -> list[tuple[str, int]]:
    """`count` withdrawals with one PENDING delivery each: (withdrawal id, delivery id)."""
    made = []
    with sessions.begin() as session:
        token = session.scalars(select(Token.id)).first()
        assert token is not None
        for i in range(count):
            withdrawal_id = add_withdrawal(
                session,
                partner_id=PARTNER,
                token_id=token,
                recipient="0x" + f"{i + 7:040x}",
                amount=1 + i,
            )
            session.execute(
                update(Withdrawal)
                .where(Withdrawal.id == withdrawal_id)
                .values(trace_context=trace_context)
            )
            now = utcnow()
            delivery = WebhookDelivery(
                endpoint_id=endpoint_id,
                event_id=f"evt_{withdrawal_id}_1",
                event_type="withdrawal.received",
                withdrawal_id=withdrawal_id,
                sequence=1,
                payload='{"data":{},"id":"x","timestamp":"t","type":"withdrawal.received"}',
                state="PENDING",
                attempts=0,
                next_attempt_time=now,
                lease_until=None,
                occur_time=now,
                create_time=now,
            )
            session.add(delivery)
            session.flush()
            made.append((withdrawal_id, delivery.id))
    return made


def _sender(sessions: sessionmaker[Session], executor: ThreadPoolExecutor) -> Sender:
    settings = WebhooksSettings(
        database_url="unused://",
        allow_http_loopback=True,
        retry_schedule=(30.0, 60.0),
        timeout_seconds=2.0,
    )
    return Sender(sessions, executor, settings, BOX)


async def _round_until_recorded(sender: Sender) -> int:
    started, _ = await sender.round()
    for _ in range(200):
        await asyncio.sleep(0.02)
        if not sender.in_flight:
            break
    await sender.stop(1.0)
    return started


def _run(sessions: sessionmaker[Session]) -> int:
    with ThreadPoolExecutor(2) as executor:
        return asyncio.run(_round_until_recorded(_sender(sessions, executor)))


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing._state, "tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_each_attempt_is_a_client_span_under_the_withdrawal_s_stored_context(
    sessions: sessionmaker[Session], secret: tuple[str, str], exported: InMemorySpanExporter
) -> None:
    endpoint_id, plain = secret
    made = _deliveries(sessions, endpoint_id, 3, STORED)
    made += _deliveries(sessions, endpoint_id, 1, None)
    assert _run(sessions) == 4
    spans = {
        str((s.attributes or {})["webhook.event_id"]): s for s in exported.get_finished_spans()
    }
    assert set(spans) == {f"evt_{w}_1" for w, _ in made}
    _, trace_id, span_id, _ = STORED.split("-")
    for withdrawal_id, delivery_id in made:
        span = spans[f"evt_{withdrawal_id}_1"]
        attributes = dict(span.attributes or {})
        assert span.kind == SpanKind.CLIENT
        assert attributes["webhook.endpoint_id"] == endpoint_id
        assert attributes["webhook.delivery_id"] == delivery_id
        assert attributes["webhook.attempt"] == 1
        assert attributes["withdrawal.id"] == withdrawal_id
        assert attributes["http.response.status_code"] == 204
        if withdrawal_id == made[-1][0]:  # no stored context: a trace of its own
            assert span.parent is None
        else:
            assert span.parent is not None
            assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (
                trace_id,
                span_id,
            )
    # Signed with the endpoint's secret, as before.
    for headers, body in _Hook.bodies:
        Webhook(plain).verify(body, {k.lower(): v for k, v in headers.items()})


def test_with_tracing_off_nothing_is_traced(
    sessions: sessionmaker[Session], secret: tuple[str, str]
) -> None:
    endpoint_id, _ = secret
    _deliveries(sessions, endpoint_id, 2, STORED)
    assert not tracing.enabled()
    assert _run(sessions) == 2
    with sessions() as session:
        states = session.scalars(
            select(WebhookDelivery.state).where(WebhookDelivery.endpoint_id == endpoint_id)
        ).all()
    assert states == ["SUCCEEDED", "SUCCEEDED"]


def _leased(endpoint_id: str, made: list[tuple[str, int]]) -> list[Leased]:
    return [
        Leased(d, endpoint_id, PARTNER, "unused", (), f"evt_{w}_1", w, "{}", 1) for w, d in made
    ]


def test_successes_of_deliveries_finished_meanwhile_keep_their_states(
    sessions: sessionmaker[Session], secret: tuple[str, str]
) -> None:
    endpoint_id, _ = secret
    made = _deliveries(sessions, endpoint_id, 3, None)
    with sessions.begin() as session:  # one FAILED meanwhile, one deleted meanwhile
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == made[0][1])
            .values(state="FAILED", attempts=5)
        )
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.id == made[1][1]))
    with ThreadPoolExecutor(1) as executor:
        sender = _sender(sessions, executor)
        sender._record_many([(lease, Result(200, 3, "")) for lease in _leased(endpoint_id, made)])
    with sessions() as session:
        rows = {
            d.id: (d.state, d.attempts)
            for d in session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        }
        attempts = {
            a.delivery_id: a.outcome
            for a in session.scalars(
                select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
            )
        }
        endpoint = session.get(WebhookEndpoint, endpoint_id)
    assert rows == {made[0][1]: ("FAILED", 5), made[2][1]: ("SUCCEEDED", 1)}
    assert attempts == {made[0][1]: "FAILED", made[2][1]: "SUCCEEDED"}
    assert endpoint is not None and endpoint.last_success_time is not None


def test_a_mixed_batch_records_each_outcome(
    sessions: sessionmaker[Session], secret: tuple[str, str]
) -> None:
    endpoint_id, _ = secret
    made = _deliveries(sessions, endpoint_id, 2, None)
    ok, failed = _leased(endpoint_id, made)
    with ThreadPoolExecutor(1) as executor:
        sender = _sender(sessions, executor)
        sender._record_many([(ok, Result(204, 3, "")), (failed, Result(500, 4, ""))])
    with sessions() as session:
        rows = {
            d.id: (d.state, d.attempts, d.lease_until, d.next_attempt_time > utcnow())
            for d in session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        }
        outcomes = dict(
            session.execute(
                select(WebhookAttempt.delivery_id, WebhookAttempt.outcome).where(
                    WebhookAttempt.endpoint_id == endpoint_id
                )
            ).all()
        )
        endpoint = session.get(WebhookEndpoint, endpoint_id)
    assert rows == {ok.id: ("SUCCEEDED", 1, None, False), failed.id: ("PENDING", 1, None, True)}
    assert outcomes == {ok.id: "SUCCEEDED", failed.id: "RETRYING"}
    assert endpoint is not None and endpoint.failing_since is not None


def test_a_second_sender_leases_nothing_another_holds(
    sessions: sessionmaker[Session], secret: tuple[str, str]
) -> None:
    endpoint_id, _ = secret
    made = _deliveries(sessions, endpoint_id, 3, None)
    with ThreadPoolExecutor(1) as executor:
        first, second = _sender(sessions, executor), _sender(sessions, executor)
        leased = first._lease_due(10, {})
        assert sorted(lease.id for lease in leased) == sorted(d for _, d in made)
        assert all(lease.signers and lease.attempt == 1 for lease in leased)
        assert second._lease_due(10, {}) == []


def test_the_rendered_insert_stores_every_value_as_given(
    sessions: sessionmaker[Session], secret: tuple[str, str]
) -> None:
    """`sql_text.insert_rows` (the text of a multi-row INSERT) round-trips awkward strings,
    NULL-free times with and without microseconds, and integers."""
    endpoint_id, _ = secret
    awkward = ['it\'s "quoted" \\ back\\slash', "line\nbreak\r\x1a\0nul", "100% {x} %s ü €", ""]
    times = [utcnow(), utcnow().replace(microsecond=0)]
    rows = [
        {
            "delivery_id": 10_000 + i,
            "endpoint_id": endpoint_id,
            "attempt": i + 1,
            "attempt_time": times[i % 2],
            "status_code": 200 + i,
            "latency_ms": 2**31 - 1 - i,
            "outcome": "SUCCEEDED",
            "error": text,
        }
        for i, text in enumerate(awkward)
    ]
    with sessions.begin() as session:
        insert_rows(session.connection(), ATTEMPTS, rows)
    with sessions() as session:
        stored = session.execute(
            select(
                WebhookAttempt.delivery_id,
                WebhookAttempt.endpoint_id,
                WebhookAttempt.attempt,
                WebhookAttempt.attempt_time,
                WebhookAttempt.status_code,
                WebhookAttempt.latency_ms,
                WebhookAttempt.outcome,
                WebhookAttempt.error,
            )
            .where(WebhookAttempt.delivery_id >= 10_000)
            .order_by(WebhookAttempt.delivery_id)
        ).all()
    assert [dict(row._mapping) for row in stored] == rows
