"""One Redis pub/sub subscription per gateway process, fanned out to local watchers.

WatchWithdrawal subscribes to a withdrawal and waits on it; a message on the withdrawal's
channel wakes it early, and the timeout makes it re-read the database anyway, so a lost or
late message (or Redis being down) only delays an event, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import redis.asyncio as aioredis

from withdrawal_shared.queue import QueueNames

log = logging.getLogger(__name__)


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
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, withdrawal_id: str) -> Iterator[Subscription]:
        """Register interest in a withdrawal before reading it, so no wake-up is missed."""
        subscription = Subscription()
        self._waiters[withdrawal_id].add(subscription.event)
        try:
            yield subscription
        finally:
            waiters = self._waiters.get(withdrawal_id)
            if waiters is not None:
                waiters.discard(subscription.event)
                if not waiters:
                    del self._waiters[withdrawal_id]

    async def _run(self) -> None:
        pattern = self._names.events_channel("*")
        prefix_len = len(self._names.events_channel(""))
        backoff = 0.2
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(pattern)
                self._ready.set()
                backoff = 0.2
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if not isinstance(channel, str):
                        continue
                    for event in tuple(self._waiters.get(channel[prefix_len:], ())):
                        event.set()
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                self._ready.clear()
                log.warning("event subscription lost; retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
