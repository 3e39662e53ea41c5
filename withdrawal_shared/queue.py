"""The processing queue and the event channel, on Redis.

- Tasks: one Redis Stream per priority (`<prefix>tasks:<priority>`), read by the processor's
  consumer group. A task is only a hint that a withdrawal needs work; the database is the
  source of truth, and a sweeper re-enqueues rows that sit too long in a state.
- Dead letters: a task that failed `PROCESSOR_MAX_DELIVERIES` times moves to the stream
  `<prefix>tasks:dead` (its withdrawal to ON_HOLD, reason DEAD_LETTERED).
- Events: after a state change commits, a message on the pub/sub channel
  `<prefix>events:<withdrawal id>` wakes whoever watches it (WatchWithdrawal), and a copy goes
  to the `<prefix>events` stream for consumers such as webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from google.protobuf import timestamp_pb2

from assetwithdrawal.events.v1 import events_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from withdrawal_shared.db.transitions import Moved
from withdrawal_shared.states import Priority

log = logging.getLogger(__name__)

EVENTS_STREAM_MAXLEN = 100_000


class QueueNames:
    """Key names under one prefix, so tests and stacks can share a Redis server safely."""

    def __init__(self, prefix: str = "aws:") -> None:
        self.prefix = prefix

    def tasks(self, priority: Priority) -> str:
        return f"{self.prefix}tasks:{priority.value.lower()}"

    def events_channel(self, withdrawal_id: str) -> str:
        return f"{self.prefix}events:{withdrawal_id}"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}events"

    @property
    def dead_letters(self) -> str:
        """Tasks the processor gave up on (see svc_processor.consumer): one entry per dead
        letter with the original task bytes, its source stream and id, its delivery count, the
        last error and when; read by operators, never consumed automatically."""
        return f"{self.prefix}tasks:dead"


def encode_task(withdrawal_id: str, priority: Priority, traceparent: str | None = None) -> bytes:
    """A withdrawal's task; `traceparent` is its stored trace context (the consumer's span
    continues that trace, `withdrawal_shared.tracing`)."""
    enqueue_time = timestamp_pb2.Timestamp()
    enqueue_time.GetCurrentTime()
    task = events_pb2.WithdrawalTask(
        withdrawal_id=withdrawal_id,
        priority=withdrawal_pb2.Priority.Value(f"PRIORITY_{priority.value}"),
        enqueue_time=enqueue_time,
        traceparent=traceparent or "",
    )
    return task.SerializeToString()


def encode_event(moved: Moved) -> bytes:
    occur = timestamp_pb2.Timestamp()
    occur.FromDatetime(moved.occur_time)
    event = events_pb2.WithdrawalStateChanged(
        withdrawal_id=moved.withdrawal_id,
        partner_id=moved.partner_id,
        from_state=withdrawal_pb2.State.Value(f"STATE_{moved.from_state.value}")
        if moved.from_state
        else withdrawal_pb2.STATE_UNSPECIFIED,
        to_state=withdrawal_pb2.State.Value(f"STATE_{moved.to_state.value}"),
        version=moved.version,
        reason=moved.reason,
        reorged=moved.reorged,
        occur_time=occur,
    )
    return event.SerializeToString()


async def enqueue(
    client: aioredis.Redis,
    names: QueueNames,
    withdrawal_id: str,
    priority: Priority,
    traceparent: str | None = None,
) -> bool:
    """Add a task; False (logged) when Redis is unavailable: the sweeper will enqueue it."""
    try:
        await client.xadd(
            names.tasks(priority), {"task": encode_task(withdrawal_id, priority, traceparent)}
        )
    except (aioredis.RedisError, OSError) as exc:
        log.warning(
            "enqueue failed; the sweeper will enqueue it",
            extra={"withdrawal_id": withdrawal_id, "error": str(exc)},
        )
        return False
    return True


# Tasks and creation events of many new withdrawals in one command. KEYS: the task streams
# used, then the events stream; ARGV[1]: the events stream's approximate MAXLEN; then three per
# withdrawal: the index in KEYS of its task stream, the task, the event.
_ENQUEUE_CREATED_LUA = """
local events = KEYS[#KEYS]
local maxlen = ARGV[1]
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'task', ARGV[i + 1])
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i + 2])
end
return (#ARGV - 1) / 3
"""


async def enqueue_created(
    client: aioredis.Redis, names: QueueNames, created: Sequence[tuple[Moved, Priority]]
) -> bool:
    """Enqueue new withdrawals and add their creation events to the events stream, all in
    one Redis command (a script): one round trip and one reply for a whole group commit,
    where `enqueue` and `publish` cost three commands and three parsed replies each.

    The creation is not PUBLISHed on the withdrawal's channel, as `publish` does for later
    changes: nobody can watch a withdrawal before the create that names it has returned, so
    the message could wake no one (a gateway subscribes only to the channels of withdrawals
    it has watchers for, see `svc_gateway.events`).
    False (logged) when Redis is unavailable: the sweeper will enqueue them."""
    if not created:
        return True
    streams: list[str] = []
    args: list[bytes | str | int] = [EVENTS_STREAM_MAXLEN]
    for moved, priority in created:
        stream = names.tasks(priority)
        if stream not in streams:
            streams.append(stream)
        args += [
            streams.index(stream) + 1,
            encode_task(moved.withdrawal_id, priority, moved.trace_context),
            encode_event(moved),
        ]
    try:
        script = client.register_script(_ENQUEUE_CREATED_LUA)
        await script(keys=[*streams, names.events_stream], args=args)
    except (aioredis.RedisError, OSError) as exc:
        log.warning(
            "enqueue failed; the sweeper will enqueue them",
            extra={
                "withdrawal_ids": [moved.withdrawal_id for moved, _ in created],
                "error": str(exc),
            },
        )
        return False
    return True


async def publish(client: aioredis.Redis, names: QueueNames, moved: Moved) -> bool:
    """Announce one committed state change; False (logged) when Redis is unavailable."""
    return await publish_many(client, names, [moved])


PUBLISH_CHUNK = 1_000  # events per Redis round trip in `publish_many`

# KEYS[1]: the events stream; ARGV[1]: its approximate MAXLEN; then two per event: the
# withdrawal's channel and the event.
_PUBLISH_LUA = """
local events = KEYS[1]
local maxlen = ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i + 1])
end
return (#ARGV - 1) / 2
"""


async def publish_many(client: aioredis.Redis, names: QueueNames, moved: Sequence[Moved]) -> bool:
    """`publish` for many committed changes, in order: one Redis command (a script doing the
    PUBLISH and the XADD of each event) per `PUBLISH_CHUNK` events, where a pipeline of two
    commands per event costs the caller two packed commands and two parsed replies each (a
    payout of hundreds of withdrawals makes hundreds of events at once); False (logged) when
    Redis is unavailable."""
    try:
        script = client.register_script(_PUBLISH_LUA)
        for start in range(0, len(moved), PUBLISH_CHUNK):
            args: list[bytes | str | int] = [EVENTS_STREAM_MAXLEN]
            for item in moved[start : start + PUBLISH_CHUNK]:
                args += [names.events_channel(item.withdrawal_id), encode_event(item)]
            await script(keys=[names.events_stream], args=args)
    except (aioredis.RedisError, OSError) as exc:
        log.warning(
            "event publish failed; watchers fall back to polling",
            extra={"events": len(moved), "error": str(exc)},
        )
        return False
    return True


def encode_chunk_task(batch_id: str, first_line: int, last_line: int) -> bytes:
    enqueue_time = timestamp_pb2.Timestamp()
    enqueue_time.GetCurrentTime()
    task = events_pb2.WithdrawalTask(
        priority=withdrawal_pb2.PRIORITY_STANDARD,
        enqueue_time=enqueue_time,
        batch_chunk=events_pb2.BatchChunk(
            batch_id=batch_id, first_line=first_line, last_line=last_line
        ),
    )
    return task.SerializeToString()


async def enqueue_batch_chunks(
    client: aioredis.Redis, names: QueueNames, batch_id: str, ranges: Sequence[tuple[int, int]]
) -> bool:
    """One task per range of a batch's lines (its withdrawals were stored together), on the
    standard stream, in one pipelined round trip: a batch of 100,000 rows is a few hundred
    tasks, not 100,000. False (logged) when Redis is unavailable: the sweeper finds the rows
    still RECEIVED."""
    if not ranges:
        return True
    try:
        async with client.pipeline(transaction=False) as pipe:
            for first, last in ranges:
                pipe.xadd(
                    names.tasks(Priority.STANDARD),
                    {"task": encode_chunk_task(batch_id, first, last)},
                )
            await pipe.execute()
    except (aioredis.RedisError, OSError) as exc:
        log.warning(
            "enqueue of a batch failed; the sweeper will enqueue its rows",
            extra={"batch_id": batch_id, "chunks": len(ranges), "error": str(exc)},
        )
        return False
    return True
