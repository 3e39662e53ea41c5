"""API-key authentication: `authorization: Bearer awk_…` to a partner, its scopes and its rate
limit, with a per-process cache of verified keys.

A verified key is trusted for GATEWAY_API_KEY_CACHE_SECONDS while this process hears the
revocation channel (`svc_gateway.revocations` calls `forget` for a revoked key, `forget_all` on
every (re)subscription, and `trust_until` while the subscription answers); otherwise for at
most `UNCONFIRMED_CACHE_SECONDS`. A revocation that arrives while the key is being looked up
keeps the lookup's answer out of the cache. The last use of each key is recorded at most once
every `LAST_USE_EVERY_SECONDS` per process, on a database thread, never awaited by a request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from svc_gateway.rate_limit import RateLimit
from withdrawal_shared.db.api_keys import VerifiedKey, key_prefix, token_sha256
from withdrawal_shared.db.operators import is_operator_credential
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import unauthenticated
from withdrawal_shared.scopes import Scope

log = logging.getLogger(__name__)

UNCONFIRMED_CACHE_SECONDS = 2.0
"""How long a verified key is trusted while revocations may go unheard (Redis down)."""
LAST_USE_EVERY_SECONDS = 60.0
"""A key's last use is written at most this often per process."""
MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the partner every read and write is scoped to, what the key may do,
    and the rate limit its requests are charged to (None: not limited)."""

    partner_id: str
    key_prefix: str
    scopes: frozenset[Scope]
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class _Cached:
    digest: str
    caller: Caller
    stored_at: float


class Authenticator:
    def __init__(
        self,
        lookup: Callable[[str], VerifiedKey | None],
        executor: Executor,
        cache_seconds: float,
        *,
        limit_for: Callable[[VerifiedKey], RateLimit | None] = lambda key: None,
        record_use: Callable[[Collection[str], dt.datetime], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._executor = executor
        self._cache_seconds = cache_seconds
        self._limit_for = limit_for
        self._record_use = record_use
        self._clock = clock
        self._cache: dict[str, _Cached] = {}  # by key prefix
        self._epoch = 0  # grows with every revocation heard
        self._trusted_until = float("-inf")
        self._used: dict[str, float] = {}  # prefix -> when its use was last recorded
        self._writes: set[asyncio.Future[None]] = set()

    def trust_until(self, deadline: float) -> None:
        """Revocations are heard until `deadline` (monotonic): cache for the full time."""
        self._trusted_until = deadline

    def forget(self, prefix: str) -> None:
        """Drop a revoked key."""
        self._epoch += 1
        self._cache.pop(prefix, None)

    def forget_all(self) -> None:
        """Drop every cached key (revocations may have been missed)."""
        self._epoch += 1
        self._cache.clear()

    def _max_age(self, now: float) -> float:
        if now < self._trusted_until:
            return self._cache_seconds
        return min(self._cache_seconds, UNCONFIRMED_CACHE_SECONDS)

    async def authenticate(self, metadata: Mapping[str, str]) -> Caller:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise unauthenticated(
                "Missing API key: send the header 'Authorization: Bearer <api key>'."
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Malformed Authorization header: use 'Bearer <api key>'.")
        token = token.strip()
        if is_operator_credential(token):
            raise unauthenticated(
                "This is an operator credential (awo_...); the withdrawal API takes a partner "
                "API key (awk_...). Operator credentials work only on the admin API."
            )
        prefix = key_prefix(token)
        if prefix is None:
            raise unauthenticated("The API key is not valid. Check it, or ask for a new one.")
        digest = token_sha256(token)
        now = self._clock()
        cached = self._cache.get(prefix)
        if (
            cached is not None
            and now - cached.stored_at < self._max_age(now)
            and hmac.compare_digest(cached.digest, digest)
        ):
            self._note_use(prefix, now)
            return cached.caller
        epoch = self._epoch
        loop = asyncio.get_running_loop()
        verified = await loop.run_in_executor(self._executor, self._lookup, token)
        if verified is None:
            self._cache.pop(prefix, None)
            raise unauthenticated(
                "The API key is unknown or revoked. Check it, or ask for a new one."
            )
        caller = Caller(verified.partner_id, prefix, verified.scopes, self._limit_for(verified))
        if epoch == self._epoch:  # no revocation arrived meanwhile
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            self._cache[prefix] = _Cached(digest, caller, now)
        self._note_use(prefix, now)
        return caller

    def _note_use(self, prefix: str, now: float) -> None:
        if self._record_use is None:
            return
        last = self._used.get(prefix)
        if last is not None and now - last < LAST_USE_EVERY_SECONDS:
            return
        if len(self._used) >= MAX_CACHED_KEYS:
            self._used.clear()
        self._used[prefix] = now
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._record_use, (prefix,), utcnow()
        )
        self._writes.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("last use not recorded", extra={"error": repr(future.exception())})
