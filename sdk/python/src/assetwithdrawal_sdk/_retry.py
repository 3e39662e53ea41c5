"""When and how long to wait before another attempt of the same call."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from assetwithdrawal_sdk.errors import (
    Aborted,
    AssetWithdrawalError,
    DeadlineExceeded,
    RateLimited,
    Unavailable,
)

log = logging.getLogger("assetwithdrawal_sdk")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one call: at most `max_attempts` attempts in all (1: never retry).

    Retried: UNAVAILABLE (the gateway unreachable, a connection reset, HTTP 502/503),
    DEADLINE_EXCEEDED (an attempt's timeout; HTTP 504) and ABORTED, for calls that are safe to
    repeat (every read, every create, which carries the same `request_id` on each attempt, and
    the idempotent updates); RESOURCE_EXHAUSTED `RATE_LIMITED` (HTTP 429) for every call (the
    gateway did nothing), waiting at least its `Retry-After`. Between attempts the wait is
    exponential with full jitter: uniform(0, min(max_backoff, initial_backoff *
    multiplier ** (attempt - 1))), and never shorter than a `Retry-After` the gateway sent
    (its 503 UNAVAILABLE when its database did not answer in time). A Retry-After longer than
    `max_retry_after` is not waited for: the error is raised with its `retry_after`."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """The wait after the `attempt`-th failed attempt (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret

    def delay(self, error: AssetWithdrawalError, attempt: int, safe: bool) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to raise `error` now."""
        if attempt >= self.max_attempts:
            return None
        if isinstance(error, RateLimited):
            if error.retry_after is None and error.reason != "RATE_LIMITED":
                return None  # another RESOURCE_EXHAUSTED (e.g. a message too large)
            wait = error.retry_after if error.retry_after is not None else self.backoff(attempt)
            if wait > self.max_retry_after:
                return None
            # Never earlier than Retry-After; a little jitter spreads the clients it held back.
            return wait + random.uniform(0, min(1.0, self.initial_backoff))  # noqa: S311
        if safe and isinstance(error, Unavailable | DeadlineExceeded | Aborted):
            wait = self.backoff(attempt)
            if error.retry_after is not None:  # the gateway's 503 says when: never earlier
                if error.retry_after > self.max_retry_after:
                    return None
                wait = max(wait, error.retry_after)
            return wait
        return None


def note_retry(method: str, error: AssetWithdrawalError, attempt: int, wait: float) -> None:
    log.info(
        "%s attempt %d failed (%s); retrying in %.2f s",
        method,
        attempt,
        error.reason or error.code,
        wait,
    )
