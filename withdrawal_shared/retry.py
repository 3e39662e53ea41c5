"""Exponential backoff with full jitter, for retrying transient failures a bounded number of
times.

Delays grow as initial, 2*initial, 4*initial ... up to `maximum`, and each one is drawn uniformly
from [0, that bound] ("full jitter"): many processes that failed together (a provider went
down for all of them) do not retry together and knock it over again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def jittered_backoff(
    initial: float = 0.1, maximum: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """An endless sequence of delays; take as many as there are retries."""
    if initial <= 0 or maximum < initial:
        raise ValueError("need 0 < initial <= maximum")
    draw = rng or random.Random()  # noqa: S311 - timing jitter, not a secret
    bound = initial
    while True:
        yield draw.uniform(0.0, bound)
        bound = min(bound * 2, maximum)


__all__ = ["jittered_backoff"]
