"""The admin core's shared state and its audited unit of work (`AdminBase`, `Done`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from sqlalchemy.orm import Session, sessionmaker

from svc_gateway.admin import changes
from withdrawal_shared.db.admin_audit import DENIED, FAILED, SUCCEEDED, append_admin_audit
from withdrawal_shared.db.changes import ChangeRegistry
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.db.transitions import Moved
from withdrawal_shared.errors import ApiError, Code

if TYPE_CHECKING:
    from svc_gateway.webhooks import WebhookCore

T = TypeVar("T")


Publish = Callable[[Sequence[Moved]], Awaitable[object]]
"""Publishes committed withdrawal state changes (the gateway's `queue.publish_many`)."""


@dataclass(frozen=True)
class Done:
    """What an audited unit of work returns: the response, and what the audit row records."""

    response: Any
    target: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


class AdminBase:
    """What every part of the admin core shares: the sessions, the thread pool, the audit."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: Executor,
        registry: ChangeRegistry,
        change_ttl_seconds: float,
        *,
        redis: aioredis.Redis | None = None,
        redis_prefix: str = "",
        on_reference_change: Callable[[], None] | None = None,
        publish: Publish | None = None,
        on_applied: Callable[[], None] | None = None,
        webhooks: WebhookCore | None = None,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.registry = registry
        self.change_ttl_seconds = change_ttl_seconds
        # Where key revocations are published (`key_revocation.revoke_key`).
        self.redis = redis
        self.redis_prefix = redis_prefix
        # Called after a token change commits (the gateway drops its reference-data cache, so
        # it applies the change at once; other processes within REFERENCE_MAX_AGE_SECONDS).
        self.on_reference_change = on_reference_change
        self.publish = publish
        self.on_applied = on_applied
        """Called after a change was confirmed (the gateway drops its cached limits)."""
        self.webhooks = webhooks
        """The partner API's webhook core, which the admin API's webhook methods call."""

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _audited(
        self, caller: OperatorIdentity, action: str, target: str, work: Callable[[Session], Done]
    ) -> Any:
        """Run `work` and its SUCCEEDED audit row in one transaction; audit a refusal in one
        of its own and re-raise it."""
        try:
            with self.sessions.begin() as session:
                done = work(session)
                append_admin_audit(
                    session,
                    operator_id=caller.operator_id,
                    action=action,
                    target=done.target,
                    outcome=SUCCEEDED,
                    before=done.before,
                    after=done.after,
                )
            return done.response
        except ApiError as err:
            self.record_refusal(caller, action, target, err)
            raise

    def record_refusal(
        self, caller: OperatorIdentity, action: str, target: str, err: ApiError
    ) -> None:
        """Audit a refused call (DENIED for PERMISSION_DENIED, FAILED otherwise)."""
        with self.sessions.begin() as session:
            append_admin_audit(
                session,
                operator_id=caller.operator_id,
                action=action,
                target=target,
                outcome=DENIED if err.code == Code.PERMISSION_DENIED else FAILED,
                reason=err.reason,
            )

    def _expire_due(self) -> None:
        with self.sessions.begin() as session:
            changes.expire_due(session)
