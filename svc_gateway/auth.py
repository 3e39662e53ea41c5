"""API-key authentication: `authorization: Bearer awk_…` to a partner, with a short cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from withdrawal_shared.db.api_keys import key_prefix, token_sha256
from withdrawal_shared.db.operators import is_operator_credential
from withdrawal_shared.errors import unauthenticated


@dataclass(frozen=True)
class Caller:
    """Who is calling: the partner every read and write is scoped to."""

    partner_id: str
    key_prefix: str


class Authenticator:
    def __init__(
        self,
        lookup: Callable[[str], str | None],
        executor: Executor,
        cache_seconds: float,
    ) -> None:
        self._lookup = lookup
        self._executor = executor
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[str, float]] = {}  # sha256(token) -> (partner, expiry)

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
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return Caller(cached[0], prefix)
        loop = asyncio.get_running_loop()
        partner = await loop.run_in_executor(self._executor, self._lookup, token)
        if partner is None:
            self._cache.pop(digest, None)
            raise unauthenticated(
                "The API key is unknown or revoked. Check it, or ask for a new one."
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (partner, now + self._cache_seconds)
        return Caller(partner, prefix)
