"""GCRA arithmetic (the Python twin of the Lua script), limit resolution and the RATE_LIMITED
error's headers."""

from __future__ import annotations

from svc_gateway.rate_limit import RateLimit, gcra, limit_for, rate_limited
from withdrawal_shared.db.api_keys import VerifiedKey
from withdrawal_shared.scopes import DEFAULT_SCOPES

SECOND = 1_000_000
T = SECOND // 10  # 10 per second


def test_a_fresh_bucket_admits_the_burst_then_one_per_interval() -> None:
    now, tat = 5 * SECOND, 0
    admitted = 0
    for _ in range(8):
        charge, tat = gcra(tat, now, T, burst=5, count=1)
        admitted += charge.admitted
    assert admitted == 5
    refused, _ = gcra(tat, now, T, burst=5, count=1)
    assert refused.admitted == 0
    assert refused.retry_after_micros == T  # one interval until the next fits
    assert refused.remaining == 0
    assert refused.reset_micros == 5 * T  # the whole burst back after five intervals
    later, tat = gcra(tat, now + T, T, burst=5, count=1)
    assert later.admitted == 1
    again, _ = gcra(tat, now + T, T, burst=5, count=1)
    assert again.admitted == 0


def test_charging_a_count_equals_charging_one_at_a_time() -> None:
    for start_tat in (0, 3 * SECOND + T // 2, 3 * SECOND + 4 * T):
        now = 3 * SECOND
        batch, batch_tat = gcra(start_tat, now, T, burst=5, count=7)
        tat, singles = start_tat, 0
        for _ in range(7):
            charge, tat = gcra(tat, now, T, burst=5, count=1)
            singles += charge.admitted
        assert (batch.admitted, batch_tat) == (singles, tat)


def test_partial_batch_reports_what_is_left_and_when_to_retry() -> None:
    charge, tat = gcra(0, SECOND, T, burst=4, count=6)
    assert (charge.admitted, charge.remaining) == (4, 0)
    assert tat == SECOND + 4 * T
    assert charge.retry_after_micros == T
    half, _ = gcra(0, SECOND, T, burst=4, count=2)
    assert (half.admitted, half.remaining, half.retry_after_micros) == (2, 2, 0)


def test_an_idle_bucket_refills_to_the_burst_and_no_further() -> None:
    _, tat = gcra(0, SECOND, T, burst=3, count=3)
    charge, _ = gcra(tat, SECOND + 100 * SECOND, T, burst=3, count=10)
    assert charge.admitted == 3


def _key(**limits: int | None) -> VerifiedKey:
    values: dict[str, int | None] = {
        "key_rate_per_second": None,
        "key_burst": None,
        "partner_rate_per_second": None,
        "partner_burst": None,
    }
    values.update(limits)
    return VerifiedKey(partner_id="p1", prefix="awk_0000abcd", scopes=DEFAULT_SCOPES, **values)


def test_limit_resolution_key_then_partner_then_default() -> None:
    assert limit_for(_key(), 100, 200) == RateLimit("key:awk_0000abcd", 100, 200)
    assert limit_for(_key(), 0, 200) is None  # no default limit
    assert limit_for(_key(partner_rate_per_second=7), 100, 200) == RateLimit("partner:p1", 7, 200)
    assert limit_for(_key(key_rate_per_second=3, key_burst=4, partner_rate_per_second=7), 0, 0) == (
        RateLimit("key:awk_0000abcd", 3, 4)
    )
    assert limit_for(_key(key_rate_per_second=3), 100, 0) == RateLimit("key:awk_0000abcd", 3, 3)


def test_rate_limited_carries_headers_and_metadata() -> None:
    limit = RateLimit("key:awk_0000abcd", 10, 20)
    charge, _ = gcra(0, SECOND, limit.interval_micros, 20, 25)
    err = rate_limited(limit, charge)
    assert (err.reason, err.code.http_status) == ("RATE_LIMITED", 429)
    assert err.headers == {
        "retry-after": "1",
        "ratelimit-limit": "20",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "2",
    }
    assert err.metadata["retry_after"] == "1"
    assert err.metadata["ratelimit_limit"] == "20"


def test_the_limiter_fails_open_when_redis_is_unreachable() -> None:
    import asyncio

    import redis.asyncio as aioredis

    from svc_gateway.rate_limit import RateLimiter

    async def run() -> list[object]:
        client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        try:
            limiter = RateLimiter(client, "awstest:none:")
            return list(await limiter.admit([RateLimit("key:x", 1, 1)] * 3 + [None]))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [None, None, None, None]
