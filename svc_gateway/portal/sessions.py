"""Portal sessions in Redis: an opaque random id (the cookie's value) -> who signed in and the
session's CSRF token, for a fixed time (the key's TTL; the cookie's Max-Age is the same).

Redis holds the SHA-256 of the id, never the id itself, so a read of Redis gives no session
away. A partner session holds the partner and its API key's prefix, never the key: each call
looks the key up by prefix again (`identity`), so a revoked key or a disabled partner ends its
sessions at once. An operator session holds the operator and its credential's prefix.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis


class Kind(enum.StrEnum):
    PARTNER = "partner"
    OPERATOR = "operator"


COOKIES = {Kind.PARTNER: "portal_session", Kind.OPERATOR: "portal_admin_session"}
"""Each kind's cookie; the operator's is scoped to /portal/admin."""
COOKIE_PATHS = {Kind.PARTNER: "/portal", Kind.OPERATOR: "/portal/admin"}


@dataclass(frozen=True)
class Session:
    kind: Kind
    subject: str
    """The partner id, or the operator id."""
    prefix: str
    """The API key's prefix, or the operator credential's."""
    csrf_token: str
    expire_time: dt.datetime


class SessionStore:
    def __init__(self, redis: aioredis.Redis, redis_prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._prefix = f"{redis_prefix}portal:session:"
        self.ttl_seconds = ttl_seconds

    def redis_key(self, session_id: str) -> str:
        """Where the session with this id (the cookie's value) is kept."""
        return self._prefix + hashlib.sha256(session_id.encode()).hexdigest()

    async def create(self, kind: Kind, subject: str, prefix: str) -> tuple[str, Session]:
        """A new session: (its id, for the cookie only; the session)."""
        session_id = secrets.token_urlsafe(32)
        expire = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
            seconds=self.ttl_seconds
        )
        session = Session(kind, subject, prefix, secrets.token_urlsafe(32), expire)
        record = {
            "kind": kind.value,
            "subject": subject,
            "prefix": prefix,
            "csrf": session.csrf_token,
            "expire": expire.isoformat(),
        }
        await self._redis.set(
            self.redis_key(session_id), json.dumps(record), ex=self.ttl_seconds, nx=True
        )
        return session_id, session

    async def get(self, session_id: str, kind: Kind) -> Session | None:
        """The live session of this kind with this id, or None (unknown, expired, signed out,
        or of the other kind)."""
        if not session_id or len(session_id) > 128:
            return None
        raw = await self._redis.get(self.redis_key(session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        if record.get("kind") != kind.value:
            return None
        return Session(
            Kind(record["kind"]),
            str(record["subject"]),
            str(record["prefix"]),
            str(record["csrf"]),
            dt.datetime.fromisoformat(record["expire"]),
        )

    async def delete(self, session_id: str) -> None:
        await self._redis.delete(self.redis_key(session_id))
