"""Queue faults on the real Redis (a key prefix of the test's own) and the real migrated
database: redelivery counting, dead letters with the withdrawal put ON_HOLD, and a consumer
that dies leaving its task to another one."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.events.v1 import events_pb2
from svc_processor.consumer import DeadLetter, TaskConsumer
from svc_processor.server import ProcessorServer, hold_dead_lettered
from svc_processor.settings import ProcessorSettings
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import verify_audit_chain
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.queue import QueueNames, enqueue
from withdrawal_shared.states import Priority, State

ACTOR = "test:processor"
GROUP = "processor"
MAX_DELIVERIES = 3
FAST_IDLE = 0.05  # seconds: failed tasks are claimed again almost at once
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def _withdrawal(sessions: sessionmaker[Session], to: State = State.QUEUED) -> str:
    """A withdrawal of the migrated polygon USDC, moved RECEIVED -> VALIDATED -> QUEUED (and
    on to `to` when asked), through the models as the gateway and processor do."""
    partner_id = f"partner-{secrets.token_hex(3)}"
    with sessions.begin() as session:
        ensure_partner(session, partner_id)
        token_id = session.scalar(
            select(Token.id).where(Token.chain == "polygon", Token.symbol == "USDC")
        )
        assert token_id is not None
        session.flush()
        return add_withdrawal(
            session,
            partner_id=partner_id,
            token_id=token_id,
            recipient="0x" + secrets.token_hex(20),
            amount=1_500_000,
            actor=ACTOR,
            to=to,
        )


def _consumer(
    client: aioredis.Redis,
    prefix: str,
    name: str,
    handle: Callable[[str], Awaitable[None]],
    *,
    claim_idle: float = FAST_IDLE,
    on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
) -> TaskConsumer:
    return TaskConsumer(
        client,
        QueueNames(prefix),
        GROUP,
        name,
        handle,
        claim_idle,
        claim_interval_seconds=FAST_IDLE,
        max_deliveries=MAX_DELIVERIES,
        on_dead_letter=on_dead_letter,
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _pending(client: aioredis.Redis, stream: str) -> int:
    info = await client.xpending(stream, GROUP)
    return int(info["pending"])


def _audit(sessions: sessionmaker[Session], withdrawal_id: str) -> list[WithdrawalAudit]:
    with sessions() as session:
        return list(
            session.scalars(
                select(WithdrawalAudit)
                .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
                .order_by(WithdrawalAudit.version)
            )
        )


def test_always_failing_task_is_dead_lettered_and_its_withdrawal_held(
    db_url: str, redis_url: str, redis_prefix: str, sessions: sessionmaker[Session]
) -> None:
    withdrawal_id = _withdrawal(sessions)
    names = QueueNames(redis_prefix)
    stream = names.tasks(Priority.STANDARD)
    calls: list[str] = []

    async def failing(wid: str) -> None:
        calls.append(wid)
        raise RuntimeError("validation blew up: boom")

    async def scenario() -> None:
        settings = ProcessorSettings(
            database_url=db_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            chain_rpc_url="http://127.0.0.1:9",  # never called: only the hold runs here
            signer_target="127.0.0.1:9",
        )
        server = ProcessorServer(settings)
        client = aioredis.from_url(redis_url)
        try:
            consumer = _consumer(
                client, redis_prefix, "c1", failing, on_dead_letter=server.dead_lettered
            )
            await consumer.ensure_groups()
            assert await enqueue(client, names, withdrawal_id, Priority.STANDARD)
            task = asyncio.create_task(consumer.run())
            await _until(lambda: consumer.dead_lettered == 1, "the dead letter")
            await asyncio.sleep(10 * FAST_IDLE)  # time for a (wrong) further delivery
            await _stop(task)

            assert calls == [withdrawal_id] * MAX_DELIVERIES
            assert consumer.dead_lettered == 1
            assert consumer.redelivered == MAX_DELIVERIES - 1
            assert await _pending(client, stream) == 0

            dead = await client.xrange(names.dead_letters)
            assert len(dead) == 1
            fields = dead[0][1]
            task_msg = events_pb2.WithdrawalTask.FromString(fields[b"task"])
            assert task_msg.withdrawal_id == withdrawal_id
            assert fields[b"withdrawal_id"].decode() == withdrawal_id
            assert fields[b"stream"].decode() == stream
            source = await client.xrange(stream)
            assert fields[b"message_id"] == source[0][0]
            assert int(fields[b"deliveries"]) == MAX_DELIVERIES
            assert fields[b"error"].decode() == "RuntimeError: validation blew up: boom"
            assert fields[b"dead_time"]

            # The hold was announced like every committed move.
            events = await client.xrange(names.events_stream)
            changes = [events_pb2.WithdrawalStateChanged.FromString(e[b"event"]) for _, e in events]
            assert [(c.withdrawal_id, c.reason) for c in changes] == [
                (withdrawal_id, HoldReason.DEAD_LETTERED)
            ]
        finally:
            await client.aclose()
            await server.stop()

    asyncio.run(scenario())

    with sessions() as session:
        row = session.get_one(Withdrawal, withdrawal_id)
        assert row.state == State.ON_HOLD
        assert row.state_reason == HoldReason.DEAD_LETTERED
        assert "operator must look" in row.state_message
        assert "RuntimeError: validation blew up: boom" in row.state_message
        assert verify_audit_chain(session, withdrawal_id)
    trail = _audit(sessions, withdrawal_id)
    assert (trail[-1].from_state, trail[-1].to_state, trail[-1].reason) == (
        State.QUEUED,
        State.ON_HOLD,
        HoldReason.DEAD_LETTERED,
    )
    assert trail[-1].actor == "processor"

    # A crash after the hold but before the ack dead-letters it again: nothing more changes.
    letter = DeadLetter(withdrawal_id, stream, "1-0", MAX_DELIVERIES + 1, "again")
    assert hold_dead_lettered(sessions, letter) == []
    assert len(_audit(sessions, withdrawal_id)) == len(trail)


@pytest.mark.parametrize("state", [State.SIGNED, State.CANCELLED])
def test_hold_leaves_signed_and_terminal_withdrawals_alone(
    sessions: sessionmaker[Session], state: State
) -> None:
    withdrawal_id = _withdrawal(sessions, to=state)
    before = _audit(sessions, withdrawal_id)
    letter = DeadLetter(withdrawal_id, "s", "1-0", MAX_DELIVERIES, "boom")
    assert hold_dead_lettered(sessions, letter) == []
    with sessions() as session:
        assert session.get_one(Withdrawal, withdrawal_id).state == state
    assert len(_audit(sessions, withdrawal_id)) == len(before)


def test_task_failing_twice_then_succeeding_is_acked(redis_url: str, redis_prefix: str) -> None:
    names = QueueNames(redis_prefix)
    stream = names.tasks(Priority.PRIORITY)
    calls: list[str] = []
    done: list[str] = []
    letters: list[DeadLetter] = []

    async def flaky(wid: str) -> None:
        calls.append(wid)
        if len(calls) <= 2:
            raise RuntimeError(f"failure {len(calls)}")
        done.append(wid)

    async def record(letter: DeadLetter) -> None:
        letters.append(letter)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        try:
            consumer = _consumer(client, redis_prefix, "c1", flaky, on_dead_letter=record)
            await consumer.ensure_groups()
            assert await enqueue(client, names, "W-FLAKY", Priority.PRIORITY)
            task = asyncio.create_task(consumer.run())
            await _until(lambda: bool(done), "the third delivery")
            await asyncio.sleep(10 * FAST_IDLE)
            await _stop(task)
            assert calls == ["W-FLAKY"] * 3
            assert consumer.redelivered == 2
            assert consumer.dead_lettered == 0
            assert letters == []
            assert await _pending(client, stream) == 0
            assert await client.xlen(names.dead_letters) == 0
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_task_of_a_dead_consumer_is_claimed_by_another(redis_url: str, redis_prefix: str) -> None:
    names = QueueNames(redis_prefix)
    stream = names.tasks(Priority.STANDARD)
    processed: list[str] = []

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        in_handler = asyncio.Event()

        async def hangs(wid: str) -> None:
            in_handler.set()
            await asyncio.Event().wait()  # never returns: the consumer "dies" here

        async def works(wid: str) -> None:
            processed.append(wid)

        try:
            first = _consumer(client, redis_prefix, "dies", hangs, claim_idle=60.0)
            await first.ensure_groups()
            assert await enqueue(client, names, "W-ORPHAN", Priority.STANDARD)
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(in_handler.wait(), TIMEOUT)
            await _stop(task)  # dies mid-task: the message stays pending, owned by "dies"
            pending = await client.xpending_range(stream, GROUP, "-", "+", 10)
            assert [p["consumer"] for p in pending] == [b"dies"]

            second = _consumer(client, redis_prefix, "survivor", works)
            task = asyncio.create_task(second.run())
            await _until(lambda: bool(processed), "the survivor to process the task")
            await _stop(task)
            assert processed == ["W-ORPHAN"]
            assert second.redelivered == 1
            assert await _pending(client, stream) == 0
            assert await client.xlen(names.dead_letters) == 0
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_restarted_consumer_resumes_its_own_pending_tasks_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    """A process restarted under the same (stable) consumer name handles what its previous
    life read but never acknowledged at start, long before the idle claim would (60 s here),
    with the redelivery counted; a task past its delivery budget is dead-lettered instead."""
    names = QueueNames(redis_prefix)
    stream = names.tasks(Priority.STANDARD)
    processed: list[str] = []
    letters: list[DeadLetter] = []

    async def record(letter: DeadLetter) -> None:
        letters.append(letter)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        in_handler = asyncio.Event()

        async def hangs(wid: str) -> None:
            in_handler.set()
            await asyncio.Event().wait()  # never returns: the process "dies" here

        async def works(wid: str) -> None:
            processed.append(wid)

        try:
            first = _consumer(client, redis_prefix, "host-0", hangs, claim_idle=60.0)
            await first.ensure_groups()
            assert await enqueue(client, names, "W-MINE", Priority.STANDARD)
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(in_handler.wait(), TIMEOUT)
            await _stop(task)
            # One more of its own, read and past the budget (delivered MAX_DELIVERIES times).
            assert await enqueue(client, names, "W-SPENT", Priority.STANDARD)
            read = await client.xreadgroup(GROUP, "host-0", {stream: ">"}, count=1)
            spent_id = read[0][1][0][0]
            for _ in range(MAX_DELIVERIES - 1):
                await client.xclaim(stream, GROUP, "host-0", 0, [spent_id])
            # And one of another consumer's, not idle long enough to be claimed.
            assert await enqueue(client, names, "W-OTHER", Priority.STANDARD)
            await client.xreadgroup(GROUP, "other", {stream: ">"}, count=1)

            again = _consumer(
                client, redis_prefix, "host-0", works, claim_idle=60.0, on_dead_letter=record
            )
            task = asyncio.create_task(again.run())
            await _until(lambda: bool(processed) and bool(letters), "the resumed tasks")
            await _stop(task)
            assert processed == ["W-MINE"]
            assert again.redelivered == 2
            assert [(x.withdrawal_id, x.deliveries) for x in letters] == [
                ("W-SPENT", MAX_DELIVERIES + 1)
            ]
            pending = await client.xpending_range(stream, GROUP, "-", "+", 10)
            assert [p["consumer"] for p in pending] == [b"other"]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_task_whose_consumers_keep_dying_is_dead_lettered_unhandled(
    redis_url: str, redis_prefix: str
) -> None:
    """Delivered more than max_deliveries times without an ack (each consumer died on it):
    dead-lettered on the next claim, without running it again."""
    names = QueueNames(redis_prefix)
    stream = names.tasks(Priority.EMERGENCY)
    calls: list[str] = []
    letters: list[DeadLetter] = []

    async def handle(wid: str) -> None:
        calls.append(wid)

    async def record(letter: DeadLetter) -> None:
        letters.append(letter)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        try:
            consumer = _consumer(client, redis_prefix, "c1", handle, on_dead_letter=record)
            await consumer.ensure_groups()
            assert await enqueue(client, names, "W-POISON", Priority.EMERGENCY)
            read = await client.xreadgroup(GROUP, "crashed-0", {stream: ">"}, count=1)
            message_id = read[0][1][0][0]
            for i in range(1, MAX_DELIVERIES):  # each claim counts one more delivery
                await client.xclaim(stream, GROUP, f"crashed-{i}", 0, [message_id])
            await asyncio.sleep(2 * FAST_IDLE)
            await consumer.claim_idle()
            assert calls == []
            assert consumer.dead_lettered == 1
            assert [(x.withdrawal_id, x.deliveries) for x in letters] == [
                ("W-POISON", MAX_DELIVERIES + 1)
            ]
            assert await _pending(client, stream) == 0
            dead = await client.xrange(names.dead_letters)
            assert dead[0][1][b"message_id"] == message_id
        finally:
            await client.aclose()

    asyncio.run(scenario())
