"""Reads the task streams with a consumer group and drives the pipeline.

A message is acknowledged only after the pipeline committed its effect (or found nothing to
do); on a failure it stays pending and, once idle for `claim_idle_seconds`, is claimed again
(XAUTOCLAIM, by this or another consumer: a consumer that died leaves its tasks to the
others). Idle tasks are looked for at start and then every `claim_interval_seconds`. A
consumer name is stable per replica (`PROCESSOR_CONSUMER_NAME`, default host + replica
index), so a restarted process first reads its own pending entries (XREADGROUP from id 0):
what it had read but not acknowledged before a crash is handled again at once instead of
after the idle claim or the sweeper.
Emergency tasks are read before priority ones, and those before standard ones.

Redis counts each message's deliveries (XPENDING). A task that failed on its
`max_deliveries`-th delivery, or is found claimed more often than that (its consumers kept
dying on it), is dead-lettered:

1. a copy goes to the dead-letter stream `<prefix>tasks:dead` (original task bytes, source
   stream, message id, delivery count, last error, time);
2. `on_dead_letter` puts the withdrawal on hold for an operator (idempotent);
3. only then is the message acknowledged on its source stream.

A crash between the steps re-delivers the message, which is dead-lettered again (a duplicate
entry with the same `message_id`; the hold is a no-op the second time). A `TransientError`
(chain RPC or signer unavailable) on the last delivery is not dead-lettered: an outage must
not park every withdrawal for an operator. The task is acknowledged and the withdrawal left
to the sweeper, which re-drives rows that sit too long in a state (the database is the source
of truth; a task is only a hint).

New tasks are read up to `READ_BATCH` at a time and, when a `handle_batch` is given, handed
to it in one call (the processor validates them in one database transaction; a single task
goes that way too, in fewer database round trips than `handle` takes); all of them are
acknowledged with one XACK after it returned. If the batch call fails, each task goes through
`handle` on its own, so the delivery counting, the dead letters and the hand-over to the
sweeper stay exactly per task. With `read_linger_seconds`, a read that found fewer than
`READ_BATCH` tasks is followed by that pause before the next one, so that a steady trickle
of tasks is validated a few at a time rather than one transaction per task (at the cost of
that much latency).

A batch chunk's task (`WithdrawalTask.batch_chunk`: a range of a CSV batch's lines, written
by the gateway instead of one task per row) goes through `handle_chunk`, which processes the
range's withdrawals still RECEIVED; it is acknowledged, redelivered and dead-lettered like any
task (a dead-lettered chunk holds no withdrawal: its rows stay RECEIVED for the sweeper).

Counters for operators: `dead_lettered`, `redelivered`, `handed_to_sweeper` (and an ERROR log
line per dead letter). Prometheus metrics are built on these later.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.exceptions import ResponseError

from assetwithdrawal.events.v1 import events_pb2
from svc_processor.errors import TransientError
from withdrawal_shared import tracing
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.metrics import QUEUE_DEAD_LETTERS, QUEUE_REDELIVERIES
from withdrawal_shared.queue import QueueNames
from withdrawal_shared.states import PRIORITIES

log = logging.getLogger(__name__)

ERROR_TEXT_MAX = 1000  # characters of the last error kept in a dead letter
DEAD_LETTERS_MAXLEN = 1_000_000  # approximate; the withdrawal's hold is the durable record
CLAIM_BATCH = 32
READ_BATCH = 500  # new tasks per XREADGROUP and stream: one batch for `handle_batch`
READ_BLOCK_SECONDS = 0.5


@dataclass(frozen=True)
class DeadLetter:
    """What was given up on, for the hold's message and the operators."""

    withdrawal_id: str  # "" when the task could not be decoded
    stream: str
    message_id: str
    deliveries: int
    error: str


Handler = Callable[[str], Awaitable[None]]
BatchHandler = Callable[[list[str]], Awaitable[None]]
ChunkHandler = Callable[[str, int, int], Awaitable[None]]
"""Processes the RECEIVED withdrawals of a batch's lines first..last (inclusive)."""
DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]
Messages = list[tuple[bytes, dict[bytes, bytes] | None]]
StreamBatch = list[tuple[bytes, Messages]] | None


def _raise_if_cancelled() -> None:
    """redis-py (8.x, asyncio) can swallow a cancellation that lands while a command is being
    sent and then wait for a reply that never comes (until `socket_timeout`): the task still
    counts the cancel request, so honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TaskConsumer:
    def __init__(
        self,
        client: aioredis.Redis,
        names: QueueNames,
        group: str,
        consumer: str,
        handle: Handler,
        claim_idle_seconds: float,
        *,
        claim_interval_seconds: float = 5.0,
        max_deliveries: int = 5,
        on_dead_letter: DeadLetterHandler | None = None,
        handle_batch: BatchHandler | None = None,
        read_linger_seconds: float = 0.0,
        handle_chunk: ChunkHandler | None = None,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._client = client
        self._streams = [names.tasks(p) for p in PRIORITIES]
        self._dead_letters = names.dead_letters
        self._group = group
        self._consumer = consumer
        self._handle = handle
        self._claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self._claim_interval = max(0.01, claim_interval_seconds)
        self._max_deliveries = max_deliveries
        self._on_dead_letter = on_dead_letter
        self._handle_batch = handle_batch
        self._handle_chunk = handle_chunk
        self._linger = max(0.0, read_linger_seconds)
        self.dead_lettered = 0
        """Tasks moved to the dead-letter stream by this consumer."""
        self.redelivered = 0
        """Deliveries of tasks delivered before (claimed after a failure or a dead consumer)."""
        self.handed_to_sweeper = 0
        """Tasks acknowledged after a transient failure on their last delivery."""

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
        next_claim = 0.0  # claim at once: a restarted consumer takes over what is idle
        resumed = False
        while True:
            try:
                await self.ensure_groups()
                if not resumed:
                    # Once per process: what this consumer name read before a crash first.
                    await self.resume_own_pending()
                    resumed = True
                while True:
                    _raise_if_cancelled()
                    now = time.monotonic()
                    if now >= next_claim:
                        await self.claim_idle()
                        now = time.monotonic()
                        next_claim = now + self._claim_interval
                    block = min(READ_BLOCK_SECONDS, max(0.001, next_claim - now))
                    response = await self._client.xreadgroup(
                        self._group,
                        self._consumer,
                        dict.fromkeys(self._streams, ">"),
                        count=READ_BATCH if self._handle_batch is not None else CLAIM_BATCH,
                        block=max(1, int(block * 1000)),
                    )
                    read = 0
                    for stream, messages in cast(StreamBatch, response) or []:
                        # New messages: this is their first delivery.
                        await self._deliver(stream, [(m, f, 1) for m, f in messages])
                        read += len(messages)
                    backoff = 0.2
                    if self._handle_batch is not None and 0 < read < READ_BATCH and self._linger:
                        # Tasks trickle in: let a few more arrive before the next read, so
                        # that each batch (one transaction) takes several instead of one.
                        await asyncio.sleep(self._linger)
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                log.warning("queue unavailable; retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def resume_own_pending(self) -> None:
        """Deliver again the tasks pending on this consumer's own name: read before a crash of
        the process that had the same (stable) name, never acknowledged. XREADGROUP with id 0
        returns them at once, where a claim would wait until they were idle for
        `claim_idle_seconds`. Redis counts the new delivery (the dead-letter budget holds);
        entries deleted from the stream meanwhile come back without fields and are acked.
        A name used for the first time has nothing to read here."""
        for stream in self._streams:
            last: bytes | str = "0-0"
            for _ in range(64):  # bounded like `claim_idle`
                response = await self._client.xreadgroup(
                    self._group, self._consumer, {stream: last}, count=READ_BATCH
                )
                batches = cast(StreamBatch, response) or []
                messages = [m for _, ms in batches for m in ms]
                if not messages:
                    break
                log.info(
                    "resuming this consumer's unacknowledged tasks",
                    extra={"stream": stream, "count": len(messages)},
                )
                counts = await self._delivery_counts(stream, [m for m, _ in messages])
                await self._deliver(stream, [(m, f, counts[m]) for m, f in messages if m in counts])
                last = messages[-1][0]

    async def claim_idle(self) -> None:
        """Claim (and handle) every task idle longer than `claim_idle_seconds`."""
        for stream in self._streams:
            cursor: bytes | str = "0-0"
            for _ in range(64):  # bounded: at most 64 * CLAIM_BATCH tasks per round
                result = await self._client.xautoclaim(
                    stream,
                    self._group,
                    self._consumer,
                    self._claim_idle_ms,
                    cursor,
                    count=CLAIM_BATCH,
                )
                cursor = result[0] if result else b"0-0"
                messages = cast(Messages, result[1] if result else [])
                if messages:
                    log.info("claimed idle tasks", extra={"stream": stream, "count": len(messages)})
                    counts = await self._delivery_counts(stream, [m for m, _ in messages])
                    await self._deliver(
                        stream,
                        [(m, f, counts[m]) for m, f in messages if m in counts],
                    )
                if _text(cursor) == "0-0":
                    break

    async def _delivery_counts(self, stream: str, message_ids: list[bytes]) -> dict[bytes, int]:
        """Redis's delivery counter of each claimed message (XAUTOCLAIM just raised it)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.xpending_range(stream, self._group, message_id, message_id, 1)
            replies = cast(list[list[dict[str, Any]]], await pipe.execute())
        counts: dict[bytes, int] = {}
        for message_id, entries in zip(message_ids, replies, strict=True):
            for entry in entries:  # empty when someone acknowledged it meanwhile
                counts[message_id] = int(entry["times_delivered"])
        return counts

    async def _deliver(  # noqa: PLR0912
        self, stream: bytes | str, messages: list[tuple[bytes, dict[bytes, bytes] | None, int]]
    ) -> None:
        messages = await self._deliver_batch(stream, messages)
        for message_id, fields, deliveries in messages:
            raw = fields.get(b"task") if fields else None
            if raw is None:
                # Nothing to do (an entry without a task, or one deleted from the stream).
                await self._client.xack(stream, self._group, message_id)
                continue
            try:
                task = events_pb2.WithdrawalTask.FromString(raw)
            except DecodeError as exc:
                await self._dead_letter(stream, message_id, raw, "", deliveries, repr(exc))
                continue
            if deliveries > 1:
                self.redelivered += 1
                QUEUE_REDELIVERIES.add(1)
            if deliveries > self._max_deliveries:
                # Its consumers never finished it (they died on it): stop here.
                await self._dead_letter(
                    stream,
                    message_id,
                    raw,
                    task.withdrawal_id,
                    deliveries,
                    "delivered more often than allowed without being acknowledged "
                    "(the consumers handling it stopped)",
                )
                continue
            try:
                with tracing.batch_span(
                    "processor process task",
                    [task.traceparent],
                    {
                        "withdrawal.id": task.withdrawal_id,
                        "messaging.message.id": _text(message_id),
                    },
                    consumer=True,
                ):
                    if task.HasField("batch_chunk"):
                        await self._chunk(task.batch_chunk)
                    else:
                        await self._handle(task.withdrawal_id)
            except TransientError as exc:
                if deliveries >= self._max_deliveries:
                    log.warning(
                        "transient failure on the last delivery; the sweeper re-drives it",
                        extra={
                            "withdrawal_id": task.withdrawal_id,
                            "deliveries": deliveries,
                            "error": str(exc),
                        },
                    )
                    await self._client.xack(stream, self._group, message_id)
                    self.handed_to_sweeper += 1
                else:
                    log.warning(
                        "transient failure; task stays pending",
                        extra={
                            "withdrawal_id": task.withdrawal_id,
                            "deliveries": deliveries,
                            "error": str(exc),
                        },
                    )
                continue
            except Exception as exc:
                if deliveries >= self._max_deliveries:
                    await self._dead_letter(
                        stream,
                        message_id,
                        raw,
                        task.withdrawal_id,
                        deliveries,
                        f"{type(exc).__name__}: {exc}",
                    )
                else:
                    log.exception(
                        "task failed; it stays pending and will be retried",
                        extra={"withdrawal_id": task.withdrawal_id, "deliveries": deliveries},
                    )
                continue
            await self._ack_processed(stream, message_id)

    async def _chunk(self, chunk: events_pb2.BatchChunk) -> None:
        if self._handle_chunk is None:
            raise RuntimeError("a batch chunk task reached a consumer without handle_chunk")
        await self._handle_chunk(chunk.batch_id, chunk.first_line, chunk.last_line)

    async def _deliver_batch(
        self, stream: bytes | str, messages: list[tuple[bytes, dict[bytes, bytes] | None, int]]
    ) -> list[tuple[bytes, dict[bytes, bytes] | None, int]]:
        """Hand the well-formed tasks still within their delivery budget to `handle_batch` at
        once and acknowledge them together; what is left (all of them when the batch call
        failed) for the per-task path."""
        if self._handle_batch is None or not messages:
            return messages
        batch: list[tuple[bytes, str]] = []
        traceparents: list[str] = []
        rest: list[tuple[bytes, dict[bytes, bytes] | None, int]] = []
        for message_id, fields, deliveries in messages:
            raw = fields.get(b"task") if fields else None
            task = None
            if raw is not None and deliveries <= self._max_deliveries:
                with contextlib.suppress(DecodeError):
                    task = events_pb2.WithdrawalTask.FromString(raw)
            if task is None or not task.withdrawal_id:
                rest.append((message_id, fields, deliveries))
            else:
                batch.append((message_id, task.withdrawal_id))
                traceparents.append(task.traceparent)
        if not batch:
            return messages
        try:
            with tracing.batch_span(
                "processor process tasks",
                traceparents,
                {"messaging.batch.message_count": len(batch)},
                consumer=True,
            ):
                await self._handle_batch([withdrawal_id for _, withdrawal_id in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "batch failed; handling its tasks one by one",
                extra={"tasks": len(batch), "error": f"{type(exc).__name__}: {exc}"},
            )
            return messages
        again = sum(1 for _, _, deliveries in messages if deliveries > 1) - sum(
            1 for _, _, deliveries in rest if deliveries > 1
        )
        self.redelivered += again
        QUEUE_REDELIVERIES.add(again)
        await self._ack_processed(stream, *[message_id for message_id, _ in batch])
        return rest

    async def _ack_processed(self, stream: bytes | str, *message_ids: bytes) -> None:
        """Acknowledge tasks whose effects are committed (a crash before this redelivers them,
        which is harmless: processing is idempotent)."""
        crash_point("processor.after_process_before_ack")
        await self._client.xack(stream, self._group, *message_ids)

    async def _dead_letter(
        self,
        stream: bytes | str,
        message_id: bytes,
        raw: bytes,
        withdrawal_id: str,
        deliveries: int,
        error: str,
    ) -> None:
        letter = DeadLetter(
            withdrawal_id=withdrawal_id,
            stream=_text(stream),
            message_id=_text(message_id),
            deliveries=deliveries,
            error=error[:ERROR_TEXT_MAX],
        )
        await self._client.xadd(
            self._dead_letters,
            {
                "task": raw,
                "withdrawal_id": letter.withdrawal_id,
                "stream": letter.stream,
                "message_id": letter.message_id,
                "deliveries": str(letter.deliveries),
                "error": letter.error,
                "consumer": self._consumer,
                "dead_time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            },
            maxlen=DEAD_LETTERS_MAXLEN,
            approximate=True,
        )
        if self._on_dead_letter is not None and letter.withdrawal_id:
            try:
                await self._on_dead_letter(letter)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not acknowledged: it is claimed again later and dead-lettered once more.
                log.exception(
                    "dead letter written but the withdrawal could not be put on hold; "
                    "retrying at the next claim",
                    extra={"withdrawal_id": letter.withdrawal_id, "message_id": letter.message_id},
                )
                return
        await self._client.xack(stream, self._group, message_id)
        self.dead_lettered += 1
        QUEUE_DEAD_LETTERS.add(1)
        log.error(
            "task dead-lettered; an operator must look at the withdrawal",
            extra={
                "withdrawal_id": letter.withdrawal_id,
                "stream": letter.stream,
                "message_id": letter.message_id,
                "deliveries": letter.deliveries,
                "error": letter.error,
                "dead_letter_stream": self._dead_letters,
            },
        )
