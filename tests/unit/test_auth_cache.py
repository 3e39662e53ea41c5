"""The per-process cache of verified API keys: full time while revocations are heard, at most
2 s otherwise, revoked keys dropped at once, and last use written at most once a minute."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import pytest

from svc_gateway.auth import UNCONFIRMED_CACHE_SECONDS, Authenticator
from withdrawal_shared.db.api_keys import VerifiedKey
from withdrawal_shared.errors import ApiError
from withdrawal_shared.scopes import Scope

TOKEN = "awk_0000abcd_" + "5" * 64
META = {"authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Keys:
    def __init__(self) -> None:
        self.valid = True
        self.lookups = 0
        self.uses: list[tuple[str, ...]] = []

    def lookup(self, token: str) -> VerifiedKey | None:
        self.lookups += 1
        if not self.valid or token != TOKEN:
            return None
        return VerifiedKey(
            "p1", "awk_0000abcd", frozenset({Scope.WITHDRAWALS_READ}), 5, 5, None, None
        )

    def record(self, prefixes: Collection[str], when: dt.datetime) -> None:
        self.uses.append(tuple(prefixes))


def _auth(keys: Keys, clock: Clock, executor: ThreadPoolExecutor) -> Authenticator:
    return Authenticator(keys.lookup, executor, 30.0, record_use=keys.record, clock=clock)


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1)


def test_without_revocations_heard_a_key_is_cached_at_most_two_seconds(
    executor: ThreadPoolExecutor,
) -> None:
    keys, clock = Keys(), Clock()

    async def run() -> None:
        auth = _auth(keys, clock, executor)
        caller = await auth.authenticate(META)
        assert caller.scopes == frozenset({Scope.WITHDRAWALS_READ})
        keys.valid = False  # revoked, and nobody told this process
        clock.now += UNCONFIRMED_CACHE_SECONDS - 0.1
        await auth.authenticate(META)  # still cached
        clock.now += 0.2
        with pytest.raises(ApiError, match="unknown or revoked"):
            await auth.authenticate(META)

    asyncio.run(run())


def test_while_revocations_are_heard_the_full_time_applies_and_forget_drops(
    executor: ThreadPoolExecutor,
) -> None:
    keys, clock = Keys(), Clock()

    async def run() -> None:
        auth = _auth(keys, clock, executor)
        auth.trust_until(clock.now + 100)
        await auth.authenticate(META)
        keys.valid = False
        clock.now += 20
        await auth.authenticate(META)  # cached: 20 s < 30 s while heard
        assert keys.lookups == 1
        auth.forget("awk_0000abcd")
        with pytest.raises(ApiError):
            await auth.authenticate(META)

    asyncio.run(run())


def test_a_revocation_during_the_lookup_keeps_its_answer_out_of_the_cache(
    executor: ThreadPoolExecutor,
) -> None:
    keys, clock = Keys(), Clock()
    auth = _auth(keys, clock, executor)
    auth.trust_until(float("inf"))
    original = keys.lookup

    def slow_lookup(token: str) -> VerifiedKey | None:
        found = original(token)
        auth.forget("awk_0000abcd")  # the revocation arrives while the row is being read
        return found

    auth._lookup = slow_lookup

    async def run() -> None:
        await auth.authenticate(META)
        keys.valid = False
        with pytest.raises(ApiError):
            await auth.authenticate(META)

    asyncio.run(run())


def test_last_use_is_recorded_at_most_once_a_minute(executor: ThreadPoolExecutor) -> None:
    keys, clock = Keys(), Clock()

    async def run() -> None:
        auth = _auth(keys, clock, executor)
        auth.trust_until(float("inf"))
        for _ in range(50):
            await auth.authenticate(META)
            clock.now += 1
        await asyncio.sleep(0.05)  # the writes run on the executor

    asyncio.run(run())
    executor.shutdown(wait=True)
    assert keys.uses == [("awk_0000abcd",)]  # at 0 s; the next is due at 60 s
