"""Who a portal call runs as: the session the portal's handler resolved from the cookie, set
in a context variable for the duration of that one call (never taken from a header the
browser sends), and turned into the same `Caller` / `OperatorIdentity` the API's
authenticators give, looked up again on each call (a revoked key or credential, a disabled
partner or operator, changed scopes or roles take effect at once).

These are the `auth` of the portal's dispatchers, which are otherwise the API's: the same
cores, scope checks, roles, rate limits and errors.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

from svc_gateway.auth import Caller
from svc_gateway.portal.sessions import Kind, Session
from svc_gateway.rate_limit import RateLimit
from withdrawal_shared.db.api_keys import VerifiedKey
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import unauthenticated

current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "portal_session", default=None
)

SIGNED_OUT = "The portal session has ended (signed out, expired or revoked). Sign in again."


def _session(kind: Kind) -> Session:
    session = current_session.get()
    if session is None or session.kind != kind:
        raise unauthenticated(SIGNED_OUT)
    return session


class PartnerSessionAuth:
    """The `Caller` of the partner session, from its API key as it is now."""

    def __init__(
        self,
        lookup: Callable[[str], VerifiedKey | None],
        executor: Executor,
        limit_for: Callable[[VerifiedKey], RateLimit | None],
    ) -> None:
        self._lookup = lookup
        self._executor = executor
        self._limit_for = limit_for

    async def authenticate(self, metadata: Mapping[str, str]) -> Caller:
        session = _session(Kind.PARTNER)
        loop = asyncio.get_running_loop()
        verified = await loop.run_in_executor(self._executor, self._lookup, session.prefix)
        if verified is None or verified.partner_id != session.subject:
            raise unauthenticated(
                "The API key this portal session signed in with is revoked, or its partner "
                "disabled. Sign in with a valid key."
            )
        return Caller(
            verified.partner_id, verified.prefix, verified.scopes, self._limit_for(verified)
        )


class OperatorSessionAuth:
    """The `OperatorIdentity` of the operator session, from its credential as it is now."""

    def __init__(
        self, lookup: Callable[[str], OperatorIdentity | None], executor: Executor
    ) -> None:
        self._lookup = lookup
        self._executor = executor

    async def authenticate(self, metadata: Mapping[str, str]) -> OperatorIdentity:
        session = _session(Kind.OPERATOR)
        loop = asyncio.get_running_loop()
        identity = await loop.run_in_executor(self._executor, self._lookup, session.prefix)
        if identity is None or identity.operator_id != session.subject:
            raise unauthenticated(
                "The operator credential this portal session signed in with is revoked, or "
                "its operator disabled. Sign in with a valid credential."
            )
        return identity
