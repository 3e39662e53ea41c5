"""STANDARD work is never starved by a steady urgent load.

On real Redis: while a producer keeps the PRIORITY stream full (always more than a read takes),
the consumer's reads still hand over the STANDARD tasks, every read taking up to READ_BATCH of
each stream. In the batcher (no chain needed): after `urgent_streak_max` urgent-led payouts in
a row that left STANDARD rows out, the next batch takes the STANDARD rows first."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis

from svc_processor import consumer as consumer_module
from svc_processor.consumer import TaskConsumer
from svc_processor.pipeline import _extends_streak, emergency_fees
from withdrawal_shared.chain.fees import Fees
from withdrawal_shared.queue import QueueNames, encode_task
from withdrawal_shared.states import Priority


def test_standard_tasks_are_read_under_a_steady_priority_load(
    redis_url: str, redis_prefix: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(consumer_module, "READ_BATCH", 20)
    names = QueueNames(redis_prefix)
    standard_ids = [f"S-{i}" for i in range(60)]
    handled: list[list[str]] = []

    async def handle(withdrawal_id: str) -> None:
        handled.append([withdrawal_id])

    async def handle_batch(ids: list[str]) -> None:
        handled.append(list(ids))
        await asyncio.sleep(0.005)  # some work per batch

    async def main() -> None:
        client = aioredis.from_url(redis_url)
        try:
            for withdrawal_id in standard_ids:
                await client.xadd(
                    names.tasks(Priority.STANDARD),
                    {"task": encode_task(withdrawal_id, Priority.STANDARD)},
                )
            stop = asyncio.Event()

            async def produce() -> None:  # always more PRIORITY tasks than a read takes
                n = 0
                while not stop.is_set():
                    async with client.pipeline(transaction=False) as pipe:
                        for _ in range(40):
                            pipe.xadd(
                                names.tasks(Priority.PRIORITY),
                                {"task": encode_task(f"P-{n}", Priority.PRIORITY)},
                            )
                            n += 1
                        await pipe.execute()
                    await asyncio.sleep(0.001)

            consumer = TaskConsumer(
                client,
                names,
                "processors",
                "c-1",
                handle,
                claim_idle_seconds=60,
                handle_batch=handle_batch,
            )
            producer = asyncio.create_task(produce())
            await asyncio.sleep(0.05)  # the PRIORITY backlog builds up first
            running = asyncio.create_task(consumer.run())
            try:
                deadline = asyncio.get_running_loop().time() + 20
                while asyncio.get_running_loop().time() < deadline:
                    seen = {i for batch in handled for i in batch if i.startswith("S-")}
                    if seen == set(standard_ids):
                        break
                    await asyncio.sleep(0.02)
                priority_backlog = await client.xlen(names.tasks(Priority.PRIORITY))
            finally:
                stop.set()
                running.cancel()
                producer.cancel()
                for task in (running, producer):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            assert priority_backlog > 0
            seen_standard = [i for batch in handled for i in batch if i.startswith("S-")]
            assert sorted(seen_standard) == sorted(standard_ids)  # all, each once
            # Each read took at most READ_BATCH STANDARD tasks, and STANDARD batches came
            # while PRIORITY ones were still arriving: 60 tasks in 3 reads.
            standard_batches = [b for b in handled if b and b[0].startswith("S-")]
            assert len(standard_batches) == 3
            assert all(len(b) <= 20 for b in standard_batches)
            first_standard = handled.index(standard_batches[0])
            assert first_standard <= 2  # served in the first read, next to PRIORITY's
        finally:
            await client.aclose()

    asyncio.run(main())


def _row(priority: Priority, n: int) -> SimpleNamespace:
    return SimpleNamespace(priority=priority.value, id=f"{priority.value[0]}{n:04d}")


def test_the_streak_counts_only_urgent_led_batches_that_left_standard_out() -> None:
    urgent = [_row(Priority.PRIORITY, i) for i in range(5)]
    standard = [_row(Priority.STANDARD, i) for i in range(5)]
    members = urgent + standard
    assert _extends_streak(members, members[:5])  # all urgent, STANDARD left out
    assert not _extends_streak(members, members)  # every STANDARD row served
    assert not _extends_streak(urgent, urgent)  # nothing STANDARD waits
    assert not _extends_streak(standard + urgent, standard)  # STANDARD-led


def test_emergency_tip_is_above_our_pending_tips() -> None:
    market = Fees(max_fee_per_gas=200, max_priority_fee_per_gas=50)
    raised = emergency_fees(market, highest_pending_tip=100, bump_pct=15, cap_wei=10_000)
    assert raised.max_priority_fee_per_gas == 115  # 100 + 15 %, rounded up
    assert raised.max_fee_per_gas == 265  # rises by as much as the tip
    assert emergency_fees(market, 40, 15, 10_000) == market  # market already higher
    assert emergency_fees(market, 0, 15, 10_000) == market  # nothing pending
    capped = emergency_fees(market, 1_000, 15, 300)
    assert capped.max_fee_per_gas == 300 and capped.max_priority_fee_per_gas == 300
