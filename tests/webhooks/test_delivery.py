"""Webhooks end to end on real MariaDB and processes: a gateway (in-process) registers the
endpoint, `python -m svc_webhooks` runs as a real process, and an aiohttp receiver on loopback
verifies every signature with the `standardwebhooks` library while failing on purpose
(500s, timeouts) and being restarted. Every event arrives at least once, and after
de-duplication by id in sequence order per withdrawal; a SIGKILL of the sender in the middle
of an attempt loses nothing; a 410 disables the endpoint at its first attempt; an endpoint
failing for the whole (short) retry schedule is disabled with an event to the partner's
other endpoint; during a secret rotation both signatures are sent and either secret
verifies, after the overlap only the new one; a private address is refused at registration
and again at delivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from svc_gateway.settings import GatewaySettings
from tests.support.databases import mariadb_database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner
from withdrawal_shared.db.models import WebhookEndpoint, Withdrawal
from withdrawal_shared.db.transitions import move
from withdrawal_shared.scopes import Scope
from withdrawal_shared.states import State
from withdrawal_shared.webhooks.urls import refused_address

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    """An aiohttp server on loopback that verifies and records, and misbehaves on demand."""

    secret: str = ""
    fail_next: int = 0  # answer 500 to this many requests
    hang_next: int = 0  # hold this many for 1.5 s (the sender times out after 1 s)
    gone: bool = False  # answer 410
    always_fail: bool = False  # answer 500 to everything
    verify: bool = True  # False: record without verifying (the test verifies `raw`)
    received: list[dict[str, Any]] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hanging: int = 0  # requests being held unanswered now
    bad_signatures: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append((dict(request.headers), body))
        if self.gone:
            return web.Response(status=410)
        if self.always_fail:
            return web.Response(status=500)
        if self.hang_next > 0:
            self.hang_next -= 1
            self.hanging += 1
            try:
                await asyncio.sleep(1.5)
            finally:
                self.hanging -= 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500)
        if not self.verify:
            return web.Response(status=204)
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        self.received.append({"id": request.headers["webhook-id"], **payload})
        return web.Response(status=204)

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with mariadb_database() as url:
        yield url


@pytest.fixture(scope="module")
def key_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("whkey") / "encryption.key"
    old = os.environ.get("WEBHOOKS_ENCRYPTION_KEY_FILE")
    os.environ["WEBHOOKS_ENCRYPTION_KEY_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WEBHOOKS_ENCRYPTION_KEY_FILE", None)
    else:
        os.environ["WEBHOOKS_ENCRYPTION_KEY_FILE"] = old


@pytest.fixture(scope="module")
def gateway(
    db_url: str, redis_url: str, module_redis_prefix: str, key_env: Path
) -> Iterator[RunningGateway]:
    settings = GatewaySettings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=module_redis_prefix,
        grpc_port=0,
        http_port=0,
        shutdown_grace_seconds=1.0,
        webhooks_allow_http_loopback=True,
    )
    running = RunningGateway(settings)
    yield running
    running.close()


class Sender:
    """`python -m svc_webhooks` as a real process, killed and restarted at will."""

    def __init__(self, db_url: str, key: Path, log: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "WEBHOOKS_ENCRYPTION_KEY_FILE": str(key),
            "WEBHOOKS_ALLOW_HTTP_LOOPBACK": "true",
            "WEBHOOKS_GRPC_PORT": "0",
            "WEBHOOKS_POLL_SECONDS": "0.1",
            # About 7 s in all: longer than the receiver's restart in the first test, short
            # enough to run out in the FAILING one.
            "WEBHOOKS_RETRY_SCHEDULE": "0.3,0.5,1,2,3",
            "WEBHOOKS_TIMEOUT_SECONDS": "1",
            "WEBHOOKS_OUTBOX_GAP_GRACE_SECONDS": "5",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "svc_webhooks"],
            cwd=REPO,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def sender(
    db_url: str, key_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sender]:
    running = Sender(db_url, key_env, tmp_path_factory.mktemp("sender") / "webhooks.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def partner(gateway: RunningGateway) -> Partner:
    with gateway.server.store.sessions.begin() as session:
        ensure_partner(session, "hooks-partner")
        session.flush()
        created = create_api_key(session, "hooks-partner", {Scope.WEBHOOKS_MANAGE, *Scope})
    return Partner("hooks-partner", created.token)


def _stub(gateway: RunningGateway) -> webhooks_pb2_grpc.WebhookServiceStub:
    return webhooks_pb2_grpc.WebhookServiceStub(gateway.channel)


def _register(gateway: RunningGateway, partner: Partner, url: str) -> webhooks_pb2.WebhookEndpoint:
    return _stub(gateway).CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(url=url)
        ),
        metadata=partner.metadata,
    )


def _advance(gateway: RunningGateway, withdrawal_id: str, *states: State) -> None:
    """Move a withdrawal on as the processor would (compare-and-set with audit rows)."""
    for state in states:
        with gateway.server.store.sessions.begin() as session:
            row = session.get(Withdrawal, withdrawal_id, with_for_update=True)
            assert row is not None
            move(session, row, state, actor="test", reason=state.value)


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_every_event_arrives_in_order_through_failures_restarts_and_a_kill(
    gateway: RunningGateway, partner: Partner, sender: Sender
) -> None:
    receiver = Receiver()
    receiver.start()
    endpoint = _register(gateway, partner, f"http://127.0.0.1:{receiver.port}/hook")
    assert endpoint.secret.startswith("whsec_")
    receiver.secret = endpoint.secret
    assert (
        _stub(gateway)
        .GetWebhookEndpoint(
            webhooks_pb2.GetWebhookEndpointRequest(name=endpoint.name), metadata=partner.metadata
        )
        .secret
        == ""
    )  # shown once

    withdrawals = [
        gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata).name.split("/")[
            1
        ]
        for _ in range(4)
    ]
    receiver.fail_next = 3  # 500s
    receiver.hang_next = 1  # a timeout
    for withdrawal in withdrawals[:2]:
        _advance(gateway, withdrawal, State.VALIDATED, State.QUEUED)
    # SIGKILL while an attempt is in flight (the receiver holds it): its lease runs out and
    # the delivery is sent again; nothing is lost.
    _wait(lambda: receiver.hanging > 0, 15, "an attempt in flight")
    sender.kill()
    for withdrawal in withdrawals[2:]:
        _advance(gateway, withdrawal, State.VALIDATED, State.QUEUED, State.CANCELLED)
    sender.start()
    # The receiver goes away and comes back on the same port.
    port = receiver.port
    receiver.stop()
    time.sleep(0.5)
    restarted = Receiver(
        secret=endpoint.secret, port=port, received=receiver.received, fail_next=3, hang_next=1
    )
    restarted.start()
    for withdrawal in withdrawals[:2]:
        _advance(gateway, withdrawal, State.CANCELLED)

    expected = {
        f"evt_{w}_{v}" for w in withdrawals for v in range(1, 5)
    }  # RECEIVED, VALIDATED, QUEUED, CANCELLED
    _wait(
        lambda: expected <= {e["id"] for e in restarted.received},
        45,
        "every event at the receiver",
    )
    assert receiver.bad_signatures == restarted.bad_signatures == 0
    seen: dict[str, list[int]] = {}
    unique: set[str] = set()
    for event in restarted.received:
        if event["id"] in unique:
            continue
        unique.add(event["id"])
        data = event["data"]
        seen.setdefault(data["withdrawal"], []).append(data["sequence"])
    for withdrawal in withdrawals:
        assert seen[f"withdrawals/{withdrawal}"] == [1, 2, 3, 4], seen

    log = _stub(gateway).ListWebhookDeliveryAttempts(
        webhooks_pb2.ListWebhookDeliveryAttemptsRequest(parent=endpoint.name, page_size=100),
        metadata=partner.metadata,
    )
    outcomes = {a.outcome for a in log.attempts}
    assert "SUCCEEDED" in outcomes and "RETRYING" in outcomes
    assert any(a.status_code == 500 for a in log.attempts)

    # Replay one event: it arrives again with the same id.
    before = len(restarted.received)
    replayed = _stub(gateway).ReplayWebhookEvents(
        webhooks_pb2.ReplayWebhookEventsRequest(
            name=endpoint.name, event_id=f"evt_{withdrawals[0]}_4"
        ),
        metadata=partner.metadata,
    )
    assert replayed.replayed_count == 1
    # A late duplicate of an attempt that timed out at the sender may arrive first.
    _wait(
        lambda: f"evt_{withdrawals[0]}_4" in {e["id"] for e in restarted.received[before:]},
        15,
        "the replayed event",
    )

    # A 410 disables the endpoint at once.
    restarted.gone = True
    another = gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
    endpoint_id = endpoint.name.split("/")[1]

    def disabled() -> bool:
        with gateway.server.store.sessions() as session:
            row = session.get(WebhookEndpoint, endpoint_id)
            return row is not None and row.state == "DISABLED"

    _wait(disabled, 15, "the endpoint disabled after a 410")
    with gateway.server.store.sessions() as session:
        reason = session.scalars(
            select(WebhookEndpoint.state_reason).where(WebhookEndpoint.id == endpoint_id)
        ).one()
    assert reason == "ENDPOINT_GONE"
    gone = _stub(gateway).ListWebhookDeliveryAttempts(
        webhooks_pb2.ListWebhookDeliveryAttemptsRequest(parent=endpoint.name, page_size=5),
        metadata=partner.metadata,
    )
    last = gone.attempts[0]  # newest first: the 410 was the event's first and last attempt
    assert (last.status_code, last.outcome, last.attempt) == (410, "FAILED", 1)
    assert last.event_id == f"evt_{another.name.split('/')[1]}_1"
    restarted.stop()


def test_private_and_metadata_addresses_are_refused(
    gateway: RunningGateway, partner: Partner
) -> None:
    for url in (
        "http://10.0.0.5/hook",
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://192.168.1.1/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "ftp://127.0.0.1/hook",
    ):
        with pytest.raises(grpc.RpcError) as refused:
            _register(gateway, partner, url)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url  # type: ignore[attr-defined]
    import ipaddress

    assert refused_address(ipaddress.ip_address("127.0.0.1"), allow_loopback=False)
    assert refused_address(ipaddress.ip_address("100.64.0.1"), allow_loopback=True)
    assert refused_address(ipaddress.ip_address("8.8.8.8"), allow_loopback=False) is None


def _new_partner(gateway: RunningGateway, name: str) -> Partner:
    partner_id = f"{name}-{os.urandom(3).hex()}"
    with gateway.server.store.sessions.begin() as session:
        ensure_partner(session, partner_id)
        session.flush()
        created = create_api_key(session, partner_id, set(Scope))
    return Partner(partner_id, created.token)


def _endpoint_row(gateway: RunningGateway, name: str) -> WebhookEndpoint:
    with gateway.server.store.sessions() as session:
        row = session.get(WebhookEndpoint, name.split("/")[1])
        assert row is not None
        return row


def test_an_endpoint_failing_for_the_whole_schedule_is_disabled_with_an_event(
    gateway: RunningGateway, sender: Sender
) -> None:
    """The sender's schedule here is 0.3 s, 0.5 s, 1 s, 2 s, 3 s (6.8 s): six attempts,
    then the delivery is FAILED and the endpoint, failing all along, DISABLED `FAILING`; the
    partner's other endpoint that lists `webhook_endpoint.disabled` is told, signed."""
    partner = _new_partner(gateway, "failing")
    failing, told = Receiver(always_fail=True), Receiver()
    failing.start()
    told.start()
    broken = _register(gateway, partner, f"http://127.0.0.1:{failing.port}/hook")
    watcher = _stub(gateway).CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhooks_pb2.WebhookEndpoint(
                url=f"http://127.0.0.1:{told.port}/hook",
                event_types=["webhook_endpoint.disabled"],
            )
        ),
        metadata=partner.metadata,
    )
    told.secret = watcher.secret
    started = time.monotonic()
    withdrawal = gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)

    _wait(lambda: _endpoint_row(gateway, broken.name).state == "DISABLED", 30, "FAILING")
    took = time.monotonic() - started
    row = _endpoint_row(gateway, broken.name)
    assert row.state_reason == "FAILING"
    assert took >= 0.8 * 6.8, f"disabled after {took:.1f} s, before the schedule ran out"
    attempts = (
        _stub(gateway)
        .ListWebhookDeliveryAttempts(
            webhooks_pb2.ListWebhookDeliveryAttemptsRequest(parent=broken.name, page_size=20),
            metadata=partner.metadata,
        )
        .attempts
    )
    assert [a.attempt for a in attempts] == [6, 5, 4, 3, 2, 1]  # newest first
    assert [a.outcome for a in attempts] == ["FAILED"] + ["RETRYING"] * 5
    assert {a.status_code for a in attempts} == {500}
    assert {a.event_id for a in attempts} == {f"evt_{withdrawal.name.split('/')[1]}_1"}
    assert len(failing.raw) == 6

    _wait(lambda: bool(told.received), 15, "the webhook_endpoint.disabled event")
    assert told.bad_signatures == 0
    (event,) = told.received
    assert event["type"] == "webhook_endpoint.disabled"
    assert event["data"] == {"webhookEndpoint": broken.name, "reason": "FAILING"}
    # A disabled endpoint gets nothing more.
    gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
    time.sleep(1.5)
    assert len(failing.raw) == 6
    failing.stop()
    told.stop()


def test_during_a_rotation_both_secrets_sign_and_either_verifies(
    gateway: RunningGateway, sender: Sender
) -> None:
    partner = _new_partner(gateway, "rotating")
    receiver = Receiver(verify=False)
    receiver.start()
    endpoint = _register(gateway, partner, f"http://127.0.0.1:{receiver.port}/hook")
    old = endpoint.secret
    rotated_at = time.monotonic()
    rotated = _stub(gateway).RotateWebhookSecret(
        webhooks_pb2.RotateWebhookSecretRequest(name=endpoint.name, overlap_seconds=5),
        metadata=partner.metadata,
    )
    new = rotated.secret
    assert new.startswith("whsec_") and new != old
    gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
    _wait(lambda: bool(receiver.raw), 15, "a delivery during the overlap")
    headers, body = receiver.raw[0]
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (old, new):  # a receiver that knows either secret accepts
        assert Webhook(secret).verify(body, headers)["type"] == "withdrawal.received"
    assert Webhook(new).verify(body, headers) == Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJD" * 8).verify(body, headers)

    # After the overlap only the new secret signs.
    assert time.monotonic() - rotated_at < 5, "the first delivery came after the overlap"
    time.sleep(max(0.0, rotated_at + 5.5 - time.monotonic()))
    gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
    _wait(lambda: len(receiver.raw) >= 2, 15, "a delivery after the overlap")
    headers, body = receiver.raw[1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(body, headers)["type"] == "withdrawal.received"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
    receiver.stop()


def test_an_address_turned_private_is_refused_at_delivery(
    gateway: RunningGateway, sender: Sender
) -> None:
    """Registration checked the URL; the sender checks again before each attempt, so a host
    that now resolves to a private address is never connected to (the attempt says why)."""
    partner = _new_partner(gateway, "rebound")
    receiver = Receiver()
    receiver.start()
    endpoint = _register(gateway, partner, f"http://127.0.0.1:{receiver.port}/hook")
    with gateway.server.store.sessions.begin() as session:
        row = session.get(WebhookEndpoint, endpoint.name.split("/")[1])
        assert row is not None
        row.url = "https://10.0.0.5/hook"  # as if its DNS now answered a private address
    gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)

    def attempted() -> list[webhooks_pb2.WebhookDeliveryAttempt]:
        return list(
            _stub(gateway)
            .ListWebhookDeliveryAttempts(
                webhooks_pb2.ListWebhookDeliveryAttemptsRequest(parent=endpoint.name),
                metadata=partner.metadata,
            )
            .attempts
        )

    _wait(lambda: bool(attempted()), 15, "an attempt")
    first = attempted()[-1]
    assert first.status_code == 0 and first.latency_ms == 0
    assert first.error.startswith("refused: the URL"), first.error
    assert "private" in first.error or "not a public" in first.error, first.error
    assert receiver.raw == []
    receiver.stop()
