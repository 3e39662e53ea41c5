"""Per-key rate limits: GCRA (the generic cell rate algorithm) in Redis, so a limit holds across
every gateway process, charged per batch of requests rather than per request.

GCRA keeps one number per bucket, its theoretical arrival time (TAT). With a rate of r
requests per second the emission interval is T = 1/r; a burst of B requests may arrive at
once. A request arriving at `now` is admitted when `max(TAT, now) + T - now <= B * T`, and then
TAT becomes `max(TAT, now) + T`. Charging n requests at once admits the first
`k = min(n, floor((now + B*T - max(TAT, now)) / T))` of them and moves TAT by `k * T`, exactly
what n single charges in a row would do. `gcra` below is the same arithmetic in Python (the
unit tests check it); `GCRA_LUA` runs it atomically in Redis, on Redis's clock (`TIME`) so
every process agrees.

`RateLimiter.admit` charges a batch of requests in one round trip, one script call per
bucket (the group commit's creates, or the reads that arrived together: usually one bucket,
sent as a single command, several as a pipeline) and answers, per request, None (admitted)
or the RATE_LIMITED error. When Redis fails or does not answer within
`CHARGE_TIMEOUT_SECONDS`, everything is admitted (fail open) and counted in
`aws_rate_limit_fail_open_total`: a Redis outage must not stop withdrawals.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from svc_gateway.errors import RATE_LIMITED
from withdrawal_shared.db.api_keys import VerifiedKey
from withdrawal_shared.errors import ApiError
from withdrawal_shared.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMIT_REFUSALS

log = logging.getLogger(__name__)

CHARGE_TIMEOUT_SECONDS = 0.5
"""A charge Redis has not answered by then is admitted (fail open)."""
MICROS = 1_000_000

GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local capacity = burst * interval
local fit = math.floor((now + capacity - tat) / interval)
if fit < 0 then fit = 0 end
local allowed = math.min(count, fit)
local new_tat = tat + allowed * interval
if allowed > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
             'PX', math.ceil((new_tat - now) / 1000) + 1)
end
local retry_after = 0
if allowed < count then retry_after = new_tat + interval - capacity - now end
local remaining = math.floor((now + capacity - new_tat) / interval)
return {allowed, remaining, retry_after, new_tat - now}
"""
"""KEYS[1]: the bucket's TAT (µs); ARGV: interval (µs), burst, count.
Returns {admitted, remaining, retry_after µs, reset µs}."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The bucket a request is charged to and its limit."""

    bucket: str
    """`key:<prefix>` for a key's own (or the default) limit, `partner:<id>` for a partner's."""
    per_second: int
    burst: int

    @property
    def interval_micros(self) -> int:
        return max(1, round(MICROS / self.per_second))


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of charging `count` requests to one bucket."""

    admitted: int
    remaining: int
    """Requests that would be admitted right after this charge."""
    retry_after_micros: int
    """When something was refused: until one more request fits; else 0."""
    reset_micros: int
    """Until the whole burst is available again."""


def gcra(tat: int, now: int, interval: int, burst: int, count: int) -> tuple[Charge, int]:
    """GCRA in integers (µs): the charge of `count` requests at `now`, and the new TAT."""
    tat = max(tat, now)
    capacity = burst * interval
    fit = max(0, (now + capacity - tat) // interval)
    admitted = min(count, fit)
    new_tat = tat + admitted * interval
    retry_after = new_tat + interval - capacity - now if admitted < count else 0
    remaining = (now + capacity - new_tat) // interval
    return Charge(admitted, remaining, retry_after, new_tat - now), new_tat


def limit_for(key: VerifiedKey, default_per_second: int, default_burst: int) -> RateLimit | None:
    """The limit a key's requests are charged to: its own, else its partner's (one bucket for
    all the partner's keys), else the default per key; None when the default is 0 (off)."""
    if key.key_rate_per_second is not None:
        burst = key.key_burst or default_burst or key.key_rate_per_second
        return RateLimit(f"key:{key.prefix}", key.key_rate_per_second, burst)
    if key.partner_rate_per_second is not None:
        burst = key.partner_burst or default_burst or key.partner_rate_per_second
        return RateLimit(f"partner:{key.partner_id}", key.partner_rate_per_second, burst)
    if default_per_second <= 0:
        return None
    return RateLimit(f"key:{key.prefix}", default_per_second, default_burst or default_per_second)


def rate_limited(limit: RateLimit, charge: Charge) -> ApiError:
    """RATE_LIMITED with the RateLimit headers (REST) / trailing metadata (gRPC)."""
    retry_after = max(1, math.ceil(charge.retry_after_micros / MICROS))
    reset = max(1, math.ceil(charge.reset_micros / MICROS))
    values = {
        "retry-after": str(retry_after),
        "ratelimit-limit": str(limit.burst),
        "ratelimit-remaining": str(max(0, charge.remaining)),
        "ratelimit-reset": str(reset),
    }
    return RATE_LIMITED.error(
        f"Too many requests for this API key: at most {limit.per_second} per second, "
        f"{limit.burst} at once. Retry after {retry_after} s with the same request.",
        metadata={**{k.replace("-", "_"): v for k, v in values.items()}},
        headers=values,
    )


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        redis_prefix: str,
        timeout_seconds: float = CHARGE_TIMEOUT_SECONDS,
    ) -> None:
        self._redis = redis
        self._key_prefix = f"{redis_prefix}ratelimit:"
        self._timeout = timeout_seconds
        self._sha: str | None = None
        self._last_warning = 0.0

    async def admit(self, limits: Sequence[RateLimit | None]) -> list[ApiError | None]:
        """Charge one request per item (None: not limited); per item None when admitted, else
        its RATE_LIMITED error. The items of one bucket are admitted in order."""
        counts: dict[RateLimit, int] = {}
        for limit in limits:
            if limit is not None:
                counts[limit] = counts.get(limit, 0) + 1
        if not counts:
            return [None] * len(limits)
        buckets = list(counts.items())
        try:
            async with asyncio.timeout(self._timeout):  # no task of its own, as wait_for makes
                charges = await self._charge(buckets)
        except (RedisError, OSError, TimeoutError) as exc:
            RATE_LIMIT_FAIL_OPEN.add(sum(counts.values()))
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("rate limiter failing open", extra={"error": repr(exc)})
            return [None] * len(limits)
        left = {limit: charge.admitted for (limit, _), charge in zip(buckets, charges, strict=True)}
        by_limit = {limit: charge for (limit, _), charge in zip(buckets, charges, strict=True)}
        outcomes: list[ApiError | None] = []
        for limit in limits:
            if limit is None:
                outcomes.append(None)
            elif left[limit] > 0:
                left[limit] -= 1
                outcomes.append(None)
            else:
                RATE_LIMIT_REFUSALS.add(1)
                outcomes.append(rate_limited(limit, by_limit[limit]))
        return outcomes

    async def _charge(self, buckets: Sequence[tuple[RateLimit, int]]) -> list[Charge]:
        """One round trip: a script call per bucket (loading the script once when missing);
        a single bucket, the usual batch, without the cost of a pipeline."""
        for attempt in range(2):
            if self._sha is None:
                self._sha = str(await self._redis.script_load(GCRA_LUA))
            calls = [
                (self._key_prefix + limit.bucket, limit.interval_micros, limit.burst, count)
                for limit, count in buckets
            ]
            try:
                if len(calls) == 1:
                    replies: list[Any] = [await self._redis.evalsha(self._sha, 1, *calls[0])]
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for call in calls:
                        pipe.evalsha(self._sha, 1, *call)
                    replies = await pipe.execute()
            except NoScriptError:  # Redis restarted or flushed its scripts
                self._sha = None
                if attempt == 0:
                    continue
                raise
            return [Charge(*(int(v) for v in reply)) for reply in replies]
        raise AssertionError("unreachable")
