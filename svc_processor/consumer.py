"""Reads the task streams with a consumer group and drives the pipeline.

A message is acknowledged only after the pipeline committed its effect (or found nothing to
do); on a transient failure it stays pending and, once idle for `claim_idle_seconds`, is
claimed again (by this or another consumer). Emergency tasks are read before priority ones,
and those before standard ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from assetwithdrawal.events.v1 import events_pb2
from svc_processor.errors import TransientError
from withdrawal_shared.queue import QueueNames
from withdrawal_shared.states import Priority

log = logging.getLogger(__name__)

ORDER = (Priority.EMERGENCY, Priority.PRIORITY, Priority.STANDARD)

Handler = Callable[[str], Awaitable[None]]
Messages = list[tuple[bytes, dict[bytes, bytes]]]
StreamBatch = list[tuple[bytes, Messages]] | None


class TaskConsumer:
    def __init__(
        self,
        client: aioredis.Redis,
        names: QueueNames,
        group: str,
        consumer: str,
        handle: Handler,
        claim_idle_seconds: float,
    ) -> None:
        self._client = client
        self._streams = [names.tasks(p) for p in ORDER]
        self._group = group
        self._consumer = consumer
        self._handle = handle
        self._claim_idle_ms = int(claim_idle_seconds * 1000)

    async def ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                # From the start of the stream: tasks added before the group existed count.
                await self._client.xgroup_create(stream, self._group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        backoff = 0.2
        claim_every = 0
        while True:
            try:
                await self.ensure_groups()
                while True:
                    claim_every = (claim_every + 1) % 20
                    if claim_every == 0:
                        await self._claim_idle()
                    response = await self._client.xreadgroup(
                        self._group,
                        self._consumer,
                        dict.fromkeys(self._streams, ">"),
                        count=32,
                        block=500,
                    )
                    for stream, messages in cast(StreamBatch, response) or []:
                        await self._deliver(stream, messages)
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                log.warning("queue unavailable; retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim_idle(self) -> None:
        for stream in self._streams:
            result = await self._client.xautoclaim(
                stream, self._group, self._consumer, self._claim_idle_ms, "0-0", count=32
            )
            messages = result[1] if result else []
            if messages:
                log.info("claimed idle tasks", extra={"stream": stream, "count": len(messages)})
                await self._deliver(stream, messages)

    async def _deliver(self, stream: bytes | str, messages: Messages) -> None:
        for message_id, fields in messages:
            raw = fields.get(b"task") if fields else None
            if raw is None:
                await self._client.xack(stream, self._group, message_id)
                continue
            task = events_pb2.WithdrawalTask.FromString(raw)
            try:
                await self._handle(task.withdrawal_id)
            except TransientError as exc:
                log.warning(
                    "transient failure; task stays pending",
                    extra={"withdrawal_id": task.withdrawal_id, "error": str(exc)},
                )
                continue
            except Exception:
                log.exception(
                    "task failed; it stays pending and will be retried",
                    extra={"withdrawal_id": task.withdrawal_id},
                )
                continue
            await self._client.xack(stream, self._group, message_id)
