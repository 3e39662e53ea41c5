"""Group commit of CreateWithdrawal: one transaction for many requests, with each request's
outcome exactly what it would be on its own (new, repeat of the original, ALREADY_EXISTS),
also when batches collide with each other or with rows committed meanwhile; on MariaDB and
SQLite, and the batcher's own behaviour on the event loop."""

from __future__ import annotations

import asyncio
import random
import secrets
import threading
from collections.abc import Iterator, Sequence

import pymysql
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from assetwithdrawal.events.v1 import events_pb2
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.batching import GroupCommit
from svc_gateway.store import Created, WithdrawalStore
from svc_gateway.validation import NewWithdrawal, validate_create
from tests.support.databases import mariadb_database
from tests.support.requests import create_request
from withdrawal_shared import queue
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import verify_audit_chain
from withdrawal_shared.errors import ApiError, Code
from withdrawal_shared.states import Priority


def _store(url: str, pool_size: int, commit: str) -> Iterator[WithdrawalStore]:
    """A store whose group commit sends each statement alone ("separate") or a batch's
    statements together on connections of its own ("together", as the gateway runs it;
    on SQLite there is no such path and both are the same)."""
    engine = make_engine(url, pool_size=pool_size)
    commit_engine = (
        make_engine(url, pool_size=pool_size, multi_statements=True)
        if commit == "together"
        else None
    )
    store = WithdrawalStore(engine, commit_engine=commit_engine)
    yield store
    store.close()
    if commit_engine is not None:
        commit_engine.dispose()
    engine.dispose()


@pytest.fixture(scope="module", params=["separate", "together"])
def store(db_url: str, request: pytest.FixtureRequest) -> Iterator[WithdrawalStore]:
    yield from _store(db_url, 8, request.param)


@pytest.fixture
def partner(store: WithdrawalStore) -> str:
    partner_id = f"gc-{secrets.token_hex(4)}"
    with store.sessions.begin() as session:
        ensure_partner(session, partner_id)
    return partner_id


def new(store: WithdrawalStore, request_id: str | None = None, amount: str = "1") -> NewWithdrawal:
    return validate_create(
        create_request(request_id=request_id, amount=amount), store.reference.get()
    )


def rows_of(store: WithdrawalStore, partner_id: str) -> int:
    with store.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.partner_id == partner_id)
            )
            or 0
        )


def created(outcome: Created | Exception) -> Created:
    assert not isinstance(outcome, Exception), outcome
    return outcome


def test_a_batch_settles_new_repeats_and_reuses_like_single_creates(
    store: WithdrawalStore, partner: str
) -> None:
    stored_before = new(store)
    reused_before = new(store)
    original, moved = store.create(partner, stored_before)
    reused_original, _ = store.create(partner, reused_before)
    assert moved is not None
    fresh = new(store)
    in_batch = new(store)
    items = [
        (partner, fresh),
        (partner, in_batch),
        (partner, in_batch),  # a repeat inside the batch: the same body
        (partner, new(store, in_batch.request_id, amount="2")),  # the same key, another body
        (partner, stored_before),  # a repeat of a row stored before the batch
        (partner, new(store, reused_before.request_id, amount="3")),  # reused stored key
    ]
    outcomes = store.create_many(items)
    assert len(outcomes) == len(items)

    first_row, first_moved = created(outcomes[0])
    assert first_moved is not None and first_moved.version == 1
    batch_row, batch_moved = created(outcomes[1])
    assert batch_moved is not None
    repeat_row, repeat_moved = created(outcomes[2])
    assert repeat_row.id == batch_row.id and repeat_moved is None
    for index, existing_id in ((3, batch_row.id), (5, reused_original.id)):
        error = outcomes[index]
        assert isinstance(error, ApiError)
        assert error.code == Code.ALREADY_EXISTS and error.reason == "IDEMPOTENCY_KEY_REUSED"
        assert error.metadata == {"withdrawal": "withdrawals/" + existing_id}
    old_row, old_moved = created(outcomes[4])
    assert old_row.id == original.id and old_moved is None

    assert rows_of(store, partner) == 4  # two before, two new
    with store.sessions() as session:
        for row in (first_row, batch_row):
            stored = session.get(Withdrawal, row.id)
            assert stored is not None
            assert (stored.amount, stored.version, stored.audit_head) == (
                row.amount,
                1,
                row.audit_head,
            )
            assert verify_audit_chain(session, row.id)
            audits = session.scalars(
                select(WithdrawalAudit).where(WithdrawalAudit.withdrawal_id == row.id)
            ).all()
            assert [(a.from_state, a.to_state, a.actor) for a in audits] == [
                ("", "RECEIVED", f"partner:{partner}")
            ]


def test_a_collision_with_a_row_committed_meanwhile_settles_as_a_repeat(
    store: WithdrawalStore, partner: str
) -> None:
    # The batch does not read before it inserts: a key that another writer committed
    # meanwhile makes its INSERT fail, and the batch settles that key and inserts the rest.
    racing = new(store)
    winner, _ = store.create(partner, racing)
    others = [new(store) for _ in range(5)]
    outcomes = store.create_many(
        [(partner, n) for n in others[:2]]
        + [(partner, racing)]
        + [(partner, n) for n in others[2:]]
    )
    repeat_row, repeat_moved = created(outcomes[2])
    assert repeat_row.id == winner.id and repeat_moved is None
    fresh = [created(o) for i, o in enumerate(outcomes) if i != 2]
    assert all(moved is not None for _, moved in fresh)
    assert rows_of(store, partner) == 6


def test_concurrent_batches_of_the_same_keys_make_one_row_each(
    store: WithdrawalStore, partner: str
) -> None:
    items = [(partner, new(store)) for _ in range(10)]
    results: list[list[Created | Exception]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def batch(seed: int) -> None:
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)  # other lock orders: deadlocks are retried
        try:
            barrier.wait()
            outcomes = store.create_many(shuffled)
            by_key = dict(zip((n.request_id for _, n in shuffled), outcomes, strict=True))
            results.append([by_key[n.request_id] for _, n in items])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=batch, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert rows_of(store, partner) == 10
    for key_index in range(10):
        outcomes = [created(r[key_index]) for r in results]
        assert len({row.id for row, _ in outcomes}) == 1
        assert sum(moved is not None for _, moved in outcomes) == 1  # created once


@pytest.fixture(scope="module", params=["separate", "together"])
def mariadb_store(request: pytest.FixtureRequest) -> Iterator[WithdrawalStore]:
    """The group commit keeps connections of its own on PyMySQL only: MariaDB, not SQLite."""
    with mariadb_database() as url:
        yield from _store(url, 4, request.param)


def test_a_batch_connection_the_server_closed_is_replaced(
    mariadb_store: WithdrawalStore,
) -> None:
    store = mariadb_store
    partner = f"gc-{secrets.token_hex(4)}"
    with store.sessions.begin() as session:
        ensure_partner(session, partner)
    created(store.create_many([(partner, new(store))])[0])
    held = store._driver_inserts._idle  # type: ignore[union-attr]
    assert held
    with store.engine.connect() as admin:
        for connection in held:  # as a server restart or an idle timeout would
            admin.exec_driver_sql(f"KILL {connection.driver_connection.thread_id()}")
    _, moved = created(store.create_many([(partner, new(store))])[0])
    assert moved is not None
    assert rows_of(store, partner) == 2


def test_a_batch_without_limits_is_one_round_trip_when_its_statements_go_together(
    mariadb_store: WithdrawalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = mariadb_store
    partner = f"gc-{secrets.token_hex(4)}"
    with store.sessions.begin() as session:
        ensure_partner(session, partner)
    sent: list[str] = []
    query = pymysql.connections.Connection.query

    def counted(self: pymysql.connections.Connection, sql: str, unbuffered: bool = False) -> int:
        sent.append(sql)
        return int(query(self, sql, unbuffered))

    monkeypatch.setattr(pymysql.connections.Connection, "query", counted)
    outcomes = store.create_many([(partner, new(store)) for _ in range(3)])
    monkeypatch.undo()
    assert all(created(o)[1] is not None for o in outcomes)
    first = next(i for i, q in enumerate(sent) if q.startswith("INSERT INTO withdrawals "))
    heads = [q.split(" (")[0] for q in sent[first:]]
    if store._driver_inserts._multi:  # type: ignore[union-attr]
        # One query: both INSERTs and COMMIT (a message's own ';' is inside a quoted value).
        assert ";INSERT INTO withdrawal_audit (" in sent[first]
        assert sent[first].endswith(");COMMIT")
        assert not any(h.startswith(("INSERT INTO withdrawal", "COMMIT")) for h in heads[1:])
    else:
        assert heads[:3] == ["INSERT INTO withdrawals", "INSERT INTO withdrawal_audit", "COMMIT"]
    assert rows_of(store, partner) == 3


# ---------------------------------------------------------------- the batcher itself


def test_group_commit_batches_what_queues_while_busy() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int | Exception]:
        sizes.append(len(items))
        await asyncio.sleep(0.02)
        return [i * 10 if i % 7 else ValueError(f"bad {i}") for i in items]

    async def run() -> list[int | BaseException]:
        batcher: GroupCommit[int, int] = GroupCommit(flush, max_batch=8, max_in_flight=1)
        assert await batcher.submit(1) == 10  # alone at low load: flushed at once, alone
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(1, 31)), return_exceptions=True
        )
        await batcher.stop()
        return results

    results = asyncio.run(run())
    for i, result in enumerate(results, start=1):
        if i % 7:
            assert result == i * 10
        else:
            assert isinstance(result, ValueError) and str(result) == f"bad {i}"
    assert sizes == [1, 8, 8, 8, 6]  # 30 at once: at most 8 a batch, one batch at a time


def test_group_commit_lingers_only_while_a_flush_is_running() -> None:
    """A lone request is flushed at once however long the linger; while a flush is running,
    the next batch waits for company, and leaves early once it is full."""
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int | Exception]:
        sizes.append(len(items))
        await asyncio.sleep(0.1)
        return list(items)

    async def run() -> tuple[float, list[int], float]:
        loop = asyncio.get_running_loop()
        batcher: GroupCommit[int, int] = GroupCommit(
            flush, max_batch=4, max_in_flight=2, wait_seconds=5.0
        )
        started = loop.time()
        assert await batcher.submit(0) == 0
        alone = loop.time() - started  # 0.1 s of flush, no linger
        started = loop.time()
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)  # the flush of 1 is running: the next batch lingers
        rest = []
        for i in range(2, 6):
            rest.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.01)
        results = await asyncio.gather(first, *rest)
        full = loop.time() - started  # the batch of 2..5 left when full, not after 5 s
        await batcher.stop()
        return alone, results, full

    alone, results, full = asyncio.run(run())
    assert alone < 1.0
    assert results == [1, 2, 3, 4, 5]
    assert sizes == [1, 1, 4]
    assert full < 1.0


def test_group_commit_a_lingering_batch_leaves_when_its_time_is_up() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int | Exception]:
        sizes.append(len(items))
        await asyncio.sleep(0.5 if items == [1] else 0)
        return list(items)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        batcher: GroupCommit[int, int] = GroupCommit(
            flush, max_batch=64, max_in_flight=2, wait_seconds=0.1
        )
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        started = loop.time()
        assert await asyncio.gather(batcher.submit(2), batcher.submit(3)) == [2, 3]
        waited = loop.time() - started  # the linger (0.1 s), not the running flush (0.5 s)
        await first
        await batcher.stop()
        return waited

    waited = asyncio.run(run())
    assert sizes == [1, 2]
    assert 0.09 <= waited < 0.45


def test_group_commit_a_failed_flush_fails_its_batch_only() -> None:
    calls = 0

    async def flush(items: Sequence[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise RuntimeError("database went away")
        return [item.upper() for item in items]

    async def run() -> tuple[BaseException | str, str]:
        batcher: GroupCommit[str, str] = GroupCommit(flush, max_in_flight=1)
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0)
        cancelled = asyncio.ensure_future(batcher.submit("gone"))
        second = asyncio.ensure_future(batcher.submit("b"))
        await asyncio.sleep(0)
        cancelled.cancel()  # a caller that went away does not break its batch
        failed = (await asyncio.gather(first, return_exceptions=True))[0]
        ok = await second
        await batcher.stop()
        return failed, ok

    failed, ok = asyncio.run(run())
    assert isinstance(failed, RuntimeError)
    assert ok == "B"


# ---------------------------------------------------------------- Redis


def test_enqueue_created_writes_the_tasks_and_events_enqueue_and_publish_write(
    store: WithdrawalStore, partner: str, redis_url: str, redis_prefix: str
) -> None:
    outcomes = store.create_many([(partner, new(store)) for _ in range(3)])
    moved = [m for _, m in map(created, outcomes) if m is not None]
    priorities = [Priority.STANDARD, Priority.EMERGENCY, Priority.STANDARD]

    async def run() -> None:
        client = aioredis.from_url(redis_url)
        names = queue.QueueNames(redis_prefix)
        try:
            assert await queue.enqueue_created(
                client, names, list(zip(moved, priorities, strict=True))
            )
            standard = await client.xrange(names.tasks(Priority.STANDARD))
            emergency = await client.xrange(names.tasks(Priority.EMERGENCY))
            tasks = [events_pb2.WithdrawalTask.FromString(f[b"task"]) for _, f in standard]
            assert [t.withdrawal_id for t in tasks] == [
                moved[0].withdrawal_id,
                moved[2].withdrawal_id,
            ]
            assert [t.priority for t in tasks] == [withdrawal_pb2.PRIORITY_STANDARD] * 2
            urgent = events_pb2.WithdrawalTask.FromString(emergency[0][1][b"task"])
            assert urgent.withdrawal_id == moved[1].withdrawal_id
            events = await client.xrange(names.events_stream)
            assert [f[b"event"] for _, f in events] == [queue.encode_event(m) for m in moved]
        finally:
            await client.aclose()
        down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        try:
            assert not await queue.enqueue_created(down, names, [(moved[0], Priority.STANDARD)])
        finally:
            await down.aclose()

    asyncio.run(run())
