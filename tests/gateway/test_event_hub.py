"""The gateway subscribes only to the event channels of withdrawals it has watchers for: the
events of every other withdrawal are never delivered to it (Redis counts the receivers of each
PUBLISH, and the channel's subscribers)."""

from __future__ import annotations

import asyncio
import secrets
import time

import redis
import redis.asyncio as aioredis

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.events import EventHub
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request
from withdrawal_shared.queue import QueueNames


def _subscribers(client: redis.Redis, channel: str) -> int:
    reply = client.pubsub_numsub(channel)
    return int(reply[0][1])


def _wait_for_subscribers(client: redis.Redis, channel: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while _subscribers(client, channel) != count:
        assert time.monotonic() < deadline, f"{channel} never had {count} subscribers"
        time.sleep(0.02)


def test_events_of_unwatched_withdrawals_are_not_delivered(
    gateway: RunningGateway, partner_a: Partner, redis_url: str, module_redis_prefix: str
) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    channel = QueueNames(module_redis_prefix).events_channel(created.name.split("/")[1])
    client = redis.Redis.from_url(redis_url)
    try:
        # Nobody watches it: an event reaches no one (the gateway included).
        assert _subscribers(client, channel) == 0
        assert client.publish(channel, b"unwatched") == 0

        watch = withdrawal_pb2.WatchWithdrawalRequest(name=created.name)
        first = gateway.stub.WatchWithdrawal(watch, metadata=partner_a.metadata, timeout=20)
        second = gateway.stub.WatchWithdrawal(watch, metadata=partner_a.metadata, timeout=20)
        # The snapshot is read after the subscription was confirmed: from here on the
        # gateway's one connection receives the withdrawal's events, once for both watchers.
        assert next(first).event_type == withdrawal_pb2.EVENT_TYPE_SNAPSHOT
        assert next(second).event_type == withdrawal_pb2.EVENT_TYPE_SNAPSHOT
        assert _subscribers(client, channel) == 1
        assert client.publish(channel, b"watched") == 1

        gateway.stub.CancelWithdrawal(
            withdrawal_pb2.CancelWithdrawalRequest(name=created.name), metadata=partner_a.metadata
        )
        for stream in (first, second):
            assert [e.withdrawal.state for e in stream] == [withdrawal_pb2.STATE_CANCELLED]
        # The last watcher left: the channel is unsubscribed again.
        _wait_for_subscribers(client, channel, 0)
        assert client.publish(channel, b"after") == 0
    finally:
        client.close()


def test_hub_resubscribes_its_watched_channels_after_a_lost_connection(
    redis_url: str, redis_prefix: str
) -> None:
    names = QueueNames(redis_prefix)
    client_name = f"hubtest-{secrets.token_hex(4)}"
    sync = redis.Redis.from_url(redis_url)

    async def run() -> None:
        hub_client = aioredis.from_url(redis_url, client_name=client_name)
        hub = EventHub(hub_client, names)
        hub.start()
        try:
            assert await hub.wait_ready(5)
            async with hub.subscribe("w-1") as subscription:
                assert await asyncio.to_thread(sync.publish, names.events_channel("w-1"), b"1")
                await asyncio.wait_for(subscription.event.wait(), 5)
                subscription.event.clear()
                killed = [
                    c["id"] for c in sync.client_list(_type="pubsub") if c["name"] == client_name
                ]
                assert killed
                for client_id in killed:
                    sync.client_kill_filter(_id=client_id)
                # Subscribed again on a new connection: events wake the watcher once more.
                deadline = time.monotonic() + 10
                while not await asyncio.to_thread(sync.publish, names.events_channel("w-1"), b"2"):
                    assert time.monotonic() < deadline, "never subscribed again"
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(subscription.event.wait(), 5)
                async with hub.subscribe("w-2"):
                    assert hub.subscribed_channels == {
                        names.events_channel("w-1"),
                        names.events_channel("w-2"),
                    }
                    assert _subscribers(sync, names.events_channel("w-2")) == 1
            deadline = time.monotonic() + 5
            while hub.subscribed_channels or _subscribers(sync, names.events_channel("w-1")):
                assert time.monotonic() < deadline, "never unsubscribed"
                await asyncio.sleep(0.02)
        finally:
            await hub.stop()
            await hub_client.aclose()

    try:
        asyncio.run(run())
    finally:
        sync.close()
