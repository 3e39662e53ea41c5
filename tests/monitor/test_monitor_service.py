"""The monitor as a service: its follower task settles a payout and each state change is
published on Redis within a second; gRPC health and reflection answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from assetwithdrawal.events.v1 import events_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import AnvilProcess, mine
from svc_monitor.server import FOLLOWER_HEALTH_NAME, MonitorServer
from svc_monitor.settings import MonitorSettings
from tests.monitor.builders import ChainSetup, pay, withdrawals
from withdrawal_shared.queue import QueueNames

pytestmark = pytest.mark.chain


class RunningMonitor:
    """A real MonitorServer on its own event loop in a background thread."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = MonitorServer(settings)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def monitor(
    anvil: AnvilProcess, setup: ChainSetup, db_url: str, redis_url: str, redis_prefix: str
) -> Iterator[RunningMonitor]:
    settings = MonitorSettings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        chain="polygon",
        chain_rpc_url=anvil.rpc_url,
        poll_seconds=0.1,
        grpc_port=0,
        shutdown_grace_seconds=1.0,
    )
    running = RunningMonitor(settings)
    yield running
    running.close()


def _next_event(pubsub: redis.client.PubSub, timeout: float) -> events_pb2.WithdrawalStateChanged:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            return events_pb2.WithdrawalStateChanged.FromString(message["data"])
    raise AssertionError(f"no event within {timeout}s")


def test_state_changes_are_published_within_a_second(
    monitor: RunningMonitor, setup: ChainSetup, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        # Subscribe before anything can move; the payout's withdrawal id is not known yet,
        # so listen on the pattern of this test's prefix.
        pubsub.psubscribe(QueueNames(redis_prefix).events_channel("*"))
        payout = pay(setup, [7_000_000])
        [withdrawal_id] = payout.withdrawal_ids
        started = time.monotonic()
        mined = _next_event(pubsub, timeout=5.0)
        assert time.monotonic() - started < 1.0
        assert mined.withdrawal_id == withdrawal_id
        assert (mined.from_state, mined.to_state) == (
            withdrawal_pb2.STATE_BROADCAST,
            withdrawal_pb2.STATE_CONFIRMING,
        )
        assert mined.reason == "MINED"

        mine(setup.w3, 10)
        started = time.monotonic()
        completed = _next_event(pubsub, timeout=5.0)
        assert time.monotonic() - started < 1.0
        assert completed.withdrawal_id == withdrawal_id
        assert completed.to_state == withdrawal_pb2.STATE_COMPLETED
        assert completed.reason == "CONFIRMED"
        assert completed.version == mined.version + 1
        [w] = withdrawals(setup, payout)
        assert w.state == "COMPLETED"
        # The copy on the events stream, for webhook consumers.
        stream = client.xrange(QueueNames(redis_prefix).events_stream)
        assert len(stream) == 2
    finally:
        pubsub.close()
        client.close()


def test_health_and_reflection(monitor: RunningMonitor) -> None:
    stub = health_pb2_grpc.HealthStub(monitor.channel)
    for name in ("", FOLLOWER_HEALTH_NAME):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection_stub = reflection_pb2_grpc.ServerReflectionStub(monitor.channel)
    [response] = list(
        reflection_stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
    )
    names = {s.name for s in response.list_services_response.service}
    assert names == {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    # The follower keeps polling.
    polls = monitor.server.polls
    deadline = time.monotonic() + 5
    while monitor.server.polls == polls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.server.polls > polls
