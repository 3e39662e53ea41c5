"""One Redis pub/sub connection per gateway process, fanned out to local watchers.

The connection SUBSCRIBEs only to the channels of withdrawals that have a watcher in this
process right now: the first watcher of a withdrawal subscribes its channel, the last one to
leave unsubscribes it, so the gateway receives no event of a withdrawal nobody watches here
(the pipeline publishes about six per withdrawal).

WatchWithdrawal registers its interest and waits until Redis confirmed the subscription (at
most `SUBSCRIBE_WAIT_SECONDS`) before it reads the database, so a change committed after that
read also wakes it. A message on the withdrawal's channel wakes it early, and the timeout makes
it re-read the database anyway, so a lost or late message (or Redis being down) only delays an
event, never loses it. After a Redis error the hub reconnects and subscribes to the channels
of the current watchers again.

All SUBSCRIBE/UNSUBSCRIBE commands are sent by one task, which reconciles what Redis should be
subscribed to (the withdrawals with watchers) with what it last asked for; the listening task
counts the confirmations Redis sends back in order, so a channel counts as subscribed only
once every command sent for it was answered and the last one was a SUBSCRIBE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from withdrawal_shared.queue import QueueNames

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_SECONDS = 1.0
"""How long a new watcher waits for Redis to confirm its channel before reading anyway."""


class Subscription:
    """Set when a message arrives for the withdrawal; stays set until the next `wait`."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return when a message arrived since the last call, or after `timeout`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class EventHub:
    def __init__(self, client: aioredis.Redis, names: QueueNames) -> None:
        self._client = client
        self._names = names
        self._prefix_len = len(names.events_channel(""))
        # A channel of this process alone keeps the connection subscribed (and proves it
        # works) while no withdrawal is watched.
        self._own_channel = names.events_channel(f"~hub-{secrets.token_hex(8)}")
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._pubsub: PubSub | None = None
        self._sent: set[str] = set()
        """Channels whose last command sent on the current connection was SUBSCRIBE."""
        self._pending: dict[str, int] = {}
        """Commands sent per channel on the current connection and not yet answered."""
        self._confirmed: dict[str, asyncio.Event] = {}
        """Set while Redis confirmed the channel's subscription and nothing is pending."""
        self._dirty: set[str] = set()
        self._wake_writer = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def subscribed_channels(self) -> frozenset[str]:
        """Channels Redis is asked to deliver to this process (for tests and diagnostics)."""
        return frozenset(self._sent)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")
        self._writer = asyncio.create_task(self._write(), name="event-hub-subscriptions")

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def stop(self) -> None:
        for task in (self._writer, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pubsub is not None:
            await _close(self._pubsub)
            self._pubsub = None

    @contextlib.asynccontextmanager
    async def subscribe(self, withdrawal_id: str) -> AsyncIterator[Subscription]:
        """Register interest in a withdrawal before reading it, so no wake-up is missed."""
        subscription = Subscription()
        channel = self._names.events_channel(withdrawal_id)
        self._waiters[withdrawal_id].add(subscription.event)
        try:
            confirmed = self._confirmed.get(channel)
            if confirmed is None or not confirmed.is_set() or channel not in self._sent:
                confirmed = self._confirmed.setdefault(channel, asyncio.Event())
                self._mark(channel)
                if self._ready.is_set():
                    # Redis down: go on at once; the poll timeout covers what is missed.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_WAIT_SECONDS)
            yield subscription
        finally:
            waiters = self._waiters.get(withdrawal_id)
            if waiters is not None:
                waiters.discard(subscription.event)
                if not waiters:
                    del self._waiters[withdrawal_id]
                    self._mark(channel)

    def _mark(self, channel: str) -> None:
        self._dirty.add(channel)
        self._wake_writer.set()

    def _wanted(self, channel: str) -> bool:
        return channel[self._prefix_len :] in self._waiters

    async def _write(self) -> None:
        """Send the SUBSCRIBE/UNSUBSCRIBE commands that bring Redis to the watched set."""
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            pubsub = self._pubsub
            if pubsub is None or not self._ready.is_set():
                continue  # the reconnect subscribes the current set
            dirty, self._dirty = self._dirty, set()
            add = [c for c in dirty if self._wanted(c) and c not in self._sent]
            drop = [c for c in dirty if not self._wanted(c) and c in self._sent]
            for channel in drop:
                self._sent.discard(channel)
                self._pending[channel] = self._pending.get(channel, 0) + 1
                event = self._confirmed.get(channel)
                if event is not None:
                    event.clear()
            for channel in add:
                self._sent.add(channel)
                self._pending[channel] = self._pending.get(channel, 0) + 1
            for channel in dirty:
                if not self._wanted(channel) and channel not in self._pending:
                    self._confirmed.pop(channel, None)
            try:
                # A closed PubSub would connect anew: send only on the listened connection.
                if drop and self._pubsub is pubsub:
                    await pubsub.unsubscribe(*drop)
                if add and self._pubsub is pubsub:
                    await pubsub.subscribe(*add)
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                # The listener sees the broken connection too and re-subscribes everything.
                log.warning("event subscription update failed", extra={"error": str(exc)})

    def _confirm(self, kind: str, channel: str) -> None:
        """Redis answered one SUBSCRIBE or UNSUBSCRIBE of `channel` (in the order sent)."""
        left = self._pending.get(channel, 0) - 1
        if left > 0:
            self._pending[channel] = left
            return
        self._pending.pop(channel, None)
        if channel in self._sent:
            if kind == "subscribe":
                self._confirmed.setdefault(channel, asyncio.Event()).set()
        elif not self._wanted(channel):
            self._confirmed.pop(channel, None)

    def _on_message(self, message: dict[str, Any]) -> bool:
        """Handle one message or confirmation; True when the connection is ready again."""
        kind = message.get("type")
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return False
        if kind == "message":
            for event in tuple(self._waiters.get(channel[self._prefix_len :], ())):
                event.set()
        elif channel == self._own_channel:
            if kind == "subscribe":
                self._ready.set()
                self._wake_writer.set()  # changes made while connecting
                return True
        elif kind in ("subscribe", "unsubscribe"):
            self._confirm(kind, channel)
        return False

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._client.pubsub()
            try:
                self._ready.clear()
                for event in self._confirmed.values():
                    event.clear()
                channels = {self._names.events_channel(w) for w in self._waiters}
                self._sent = set(channels)
                self._pending = dict.fromkeys(channels, 1)
                self._dirty.clear()
                self._pubsub = pubsub
                await pubsub.subscribe(self._own_channel, *channels)
                async for message in pubsub.listen():
                    if self._on_message(message):
                        backoff = 0.2
                # listen() returns only when nothing is subscribed any more: start over.
                raise aioredis.ConnectionError("event subscription ended")
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                self._ready.clear()
                log.warning("event subscription lost; retrying", extra={"error": str(exc)})
            finally:
                if self._pubsub is pubsub:
                    self._pubsub = None
                await _close(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(aioredis.RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
