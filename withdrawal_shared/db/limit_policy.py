"""The configured tiers and limits as one immutable snapshot (`LimitPolicy`), cached.

Tiers, their limits, partners' default tiers and partner-wide limits are small tables that
change only through the admin functions (`withdrawal_shared.db.tier_admin`); the gateway
keeps a snapshot and re-reads it when older than `GATEWAY_LIMITS_CACHE_SECONDS`, so a change
takes effect within that time. Which tier one user is in is not cached: the group commit
reads the assignments of its batch's users (`user_tiers`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.models import LimitTier, PartnerLimit, TierLimit, UserTier
from withdrawal_shared.states import Priority

DEFAULT_TIER = "standard"
"""The tier of a user with no assignment, unless the partner has a default tier of its own."""
PARTNER_DEFAULT = ""
"""The `user_tiers.user_ref` under which a partner's default tier is stored (a real user_ref
is never empty)."""


@dataclass(frozen=True, slots=True)
class TierLimits:
    """A tier's limits for one token in base units; None is no limit."""

    per_withdrawal_max: int | None = None
    daily_amount: int | None = None
    daily_count: int | None = None

    @property
    def daily(self) -> bool:
        """Whether a rolling-24-hour limit is set (the withdrawal must then be counted)."""
        return self.daily_amount is not None or self.daily_count is not None


NO_LIMITS = TierLimits()


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    description: str
    default_priority: Priority
    limits: Mapping[int, TierLimits]  # by token id


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    tiers: Mapping[str, Tier]
    partner_default_tiers: Mapping[str, str]
    partner_daily: Mapping[tuple[str, int], int]  # (partner, token id) -> base units

    @property
    def any_limit(self) -> bool:
        """Whether any limit is configured at all (else the group commit skips the work)."""
        return bool(self.partner_daily) or any(t.limits for t in self.tiers.values())

    def default_tier(self, partner_id: str) -> str:
        return self.partner_default_tiers.get(partner_id, DEFAULT_TIER)

    def tier_limits(self, tier: str, token_id: int) -> TierLimits:
        found = self.tiers.get(tier)
        return NO_LIMITS if found is None else found.limits.get(token_id, NO_LIMITS)

    def default_priority(self, tier: str) -> Priority:
        found = self.tiers.get(tier)
        return Priority.STANDARD if found is None else found.default_priority

    @classmethod
    def load(cls, session: Session | Connection) -> LimitPolicy:
        limits: dict[str, dict[int, TierLimits]] = {}
        for tier, token_id, per_withdrawal, amount, count in session.execute(
            select(
                TierLimit.tier,
                TierLimit.token_id,
                TierLimit.per_withdrawal_max,
                TierLimit.daily_amount,
                TierLimit.daily_count,
            )
        ):
            limits.setdefault(tier, {})[token_id] = TierLimits(per_withdrawal, amount, count)
        tiers = {
            name: Tier(name, description, Priority(priority), limits.get(name, {}))
            for name, description, priority in session.execute(
                select(LimitTier.name, LimitTier.description, LimitTier.default_priority)
            )
        }
        defaults = {
            partner_id: tier
            for partner_id, tier in session.execute(
                select(UserTier.partner_id, UserTier.tier).where(
                    UserTier.user_ref == PARTNER_DEFAULT
                )
            )
        }
        partner_daily = {
            (partner_id, token_id): amount
            for partner_id, token_id, amount in session.execute(
                select(PartnerLimit.partner_id, PartnerLimit.token_id, PartnerLimit.daily_amount)
            )
        }
        return cls(tiers, defaults, partner_daily)


def assigned_tiers(
    connection: Session | Connection, users: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The tier assigned to each (partner_id, user_ref) that has one, in one statement."""
    by_partner: dict[str, set[str]] = {}
    for partner_id, user_ref in users:
        by_partner.setdefault(partner_id, set()).add(user_ref)
    if not by_partner:
        return {}
    condition = or_(
        *(
            and_(UserTier.partner_id == partner_id, UserTier.user_ref.in_(sorted(refs)))
            for partner_id, refs in by_partner.items()
        )
    )
    rows = connection.execute(
        select(UserTier.partner_id, UserTier.user_ref, UserTier.tier).where(condition)
    )
    return {(partner_id, user_ref): tier for partner_id, user_ref, tier in rows}


class LimitPolicyCache:
    """A LimitPolicy snapshot re-read when older than `max_age` seconds (0: every time)."""

    def __init__(self, sessions: sessionmaker[Session], max_age: float = 5.0) -> None:
        self._sessions = sessions
        self._max_age = max_age
        self._lock = threading.Lock()
        self._policy: LimitPolicy | None = None
        self._loaded_at = 0.0

    def get(self) -> LimitPolicy:
        policy = self._policy
        if policy is not None and time.monotonic() - self._loaded_at < self._max_age:
            return policy
        with self._lock:
            policy = self._policy
            if policy is None or time.monotonic() - self._loaded_at >= self._max_age:
                with self._sessions() as session:
                    policy = LimitPolicy.load(session)
                self._policy = policy
                self._loaded_at = time.monotonic()
            return policy

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0
