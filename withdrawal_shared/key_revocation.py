"""Revoking an API key everywhere at once: the row, then a message every gateway acts on.

`revoke_key` revokes the key in the database (idempotent) and PUBLISHes its prefix on
`revocation_channel(REDIS_PREFIX)`; every gateway process subscribes to that channel and drops
the key from its cache of verified keys, so the key is refused within milliseconds. A gateway
whose subscription is down trusts its cache for at most 2 seconds instead, and one that
(re)subscribes forgets every cached key, so a message it missed costs nothing. When the
publish itself fails (Redis unreachable from the caller), `revoke_key` says so: the key is
revoked, but a gateway that is still subscribed keeps it for up to
GATEWAY_API_KEY_CACHE_SECONDS; calling `revoke_key` again publishes again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.api_keys import ApiKeyInfo, revoke_api_key

log = logging.getLogger(__name__)


def revocation_channel(redis_prefix: str) -> str:
    """The pub/sub channel carrying the prefixes of revoked keys."""
    return f"{redis_prefix}api-keys:revoked"


async def publish_revocation(redis: aioredis.Redis, redis_prefix: str, prefix: str) -> bool:
    """Tell every gateway to drop the key; False when Redis could not be reached."""
    try:
        await redis.publish(revocation_channel(redis_prefix), prefix)
    except (RedisError, OSError) as exc:
        log.warning("revocation not published", extra={"key_prefix": prefix, "error": repr(exc)})
        return False
    return True


@dataclass(frozen=True, slots=True)
class Revocation:
    """The revoked key, and whether the gateways were told (else: retry `revoke_key`)."""

    key: ApiKeyInfo
    published: bool


async def revoke_key(
    sessions: sessionmaker[Session],
    redis: aioredis.Redis,
    redis_prefix: str,
    partner_id: str,
    prefix: str,
) -> Revocation | None:
    """Revoke the partner's key (committed), then publish it to every gateway.

    Idempotent: revoking a revoked key publishes again. None when the partner has no such key.
    The database work runs on a worker thread.
    """

    def revoke() -> ApiKeyInfo | None:
        with sessions.begin() as session:
            return revoke_api_key(session, partner_id, prefix)

    key = await asyncio.to_thread(revoke)
    if key is None:
        return None
    return Revocation(key, await publish_revocation(redis, redis_prefix, prefix))
