"""Hears revoked API keys: one Redis pub/sub connection per gateway process on
`withdrawal_shared.key_revocation.revocation_channel`, dropping each revoked key from the
process's `Authenticator` cache as the message arrives.

Every (re)subscription first empties the cache (a revocation may have been published while
the connection was down). The listener PINGs every `PING_SECONDS`; each answer or message
extends the authenticator's full cache time by `TRUST_SECONDS`, so a connection that breaks
or silently stalls makes cached keys live at most `auth.UNCONFIRMED_CACHE_SECONDS` after
their lookup, and a revocation then takes effect within about 2 s without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from svc_gateway.auth import Authenticator

log = logging.getLogger(__name__)

PING_SECONDS = 0.5
TRUST_SECONDS = 1.5
RECONNECT_SECONDS = 0.5
CLOSE_SECONDS = 1.0


class RevocationListener:
    def __init__(self, redis: aioredis.Redis, channel: str, auth: Authenticator) -> None:
        self._redis = redis
        self._channel = channel
        self._auth = auth
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocations")

    async def stop(self) -> None:
        """Cancel the listener and wait for it. The loops also stop on a flag, and the cancel
        is repeated: a cancel that lands inside the Redis client's own timeout handling of
        `get_message` can be taken for that timeout and swallowed."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning(
                        "revocation channel unavailable; cached keys live at most 2 s",
                        extra={"error": repr(exc)},
                    )
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            last_ping = time.monotonic()
            while not self._stopping:
                message = await pubsub.get_message(timeout=PING_SECONDS)
                now = time.monotonic()
                if message is not None:
                    kind = message["type"]
                    if kind == "subscribe":
                        self._auth.forget_all()
                        log.info("revocation channel subscribed")
                    elif kind == "message":
                        data = message["data"]
                        prefix = data.decode() if isinstance(data, bytes) else str(data)
                        self._auth.forget(prefix)
                        log.info("api key revoked", extra={"key_prefix": prefix})
                    if kind in ("subscribe", "message", "pong"):
                        self._auth.trust_until(now + TRUST_SECONDS)
                if now - last_ping >= PING_SECONDS:
                    last_ping = now
                    await pubsub.ping()
        finally:
            self._auth.trust_until(float("-inf"))
            # Bounded: closing hands the connection back to the client's pool, which can wait
            # on the pool while the task is being cancelled at shutdown; the listener must
            # never hold up the gateway's stop.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
