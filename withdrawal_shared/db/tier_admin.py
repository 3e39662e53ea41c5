"""The operations an operator performs on tiers and limits, transport-neutral, for the admin
API to call: list the tiers, set a tier's limits for a token, put a partner's user in a tier
(or set a partner's default tier), set a partner's 24-hour limit.

Each runs in the caller's session and transaction (`sessions.begin()`), so the admin API can
commit its own audit record with the change, and returns the values before and after it.
Amounts are decimal strings in token units here, as at the API, and integers in base units in
the database. The gateway applies a change within `GATEWAY_LIMITS_CACHE_SECONDS`; an
assignment, at the next batch. Refusals raise `TierAdminError` subclasses, whose message says
what to fix; nothing is changed then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.amounts import AmountError, format_amount, parse_amount
from withdrawal_shared.db.limit_policy import DEFAULT_TIER, PARTNER_DEFAULT
from withdrawal_shared.db.models import (
    LimitTier,
    Partner,
    PartnerLimit,
    TierLimit,
    Token,
    UserTier,
)
from withdrawal_shared.errors import WithdrawalSystemError, quoted

T = TypeVar("T")
DEFAULT_CHAIN = "polygon"
USER_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
"""A partner's end-user reference, the same at the API (`user_ref`) and here."""
USER_REF_RULE = (
    "must be 1-128 characters of letters, digits and . _ : - @, starting with a letter or digit"
)


class TierAdminError(WithdrawalSystemError):
    """A refused change; `field` names the argument at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownTier(TierAdminError):
    pass


class UnknownToken(TierAdminError):
    pass


class UnknownPartner(TierAdminError):
    pass


class InvalidLimit(TierAdminError):
    pass


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """A tier's limits for one token; None is no limit."""

    chain: str
    token: str
    per_withdrawal_max: str | None  # decimal string in token units
    daily_amount: str | None  # per user, rolling 24 hours
    daily_count: int | None  # per user, rolling 24 hours


@dataclass(frozen=True, slots=True)
class TierInfo:
    name: str
    description: str
    default_priority: str  # STANDARD, PRIORITY or EMERGENCY
    limits: tuple[TokenLimits, ...]


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """A value before and after a change (None: not set)."""

    before: T | None
    after: T | None


def list_tiers(session: Session) -> list[TierInfo]:
    """Every tier with its limits per token, by name."""
    tokens = {t.id: t for t in session.scalars(select(Token))}
    by_tier: dict[str, list[TokenLimits]] = {}
    for row in session.scalars(select(TierLimit).order_by(TierLimit.tier, TierLimit.token_id)):
        by_tier.setdefault(row.tier, []).append(_token_limits(row, tokens[row.token_id]))
    return [
        TierInfo(t.name, t.description, t.default_priority, tuple(by_tier.get(t.name, ())))
        for t in session.scalars(select(LimitTier).order_by(LimitTier.name))
    ]


def set_tier_limits(
    session: Session,
    tier: str,
    token: str,
    *,
    per_withdrawal_max: str | None,
    daily_amount: str | None,
    daily_count: int | None,
    chain: str = DEFAULT_CHAIN,
) -> Change[TokenLimits]:
    """Set (replace) a tier's limits for a token; all None removes them."""
    _tier(session, tier)
    token_row = _token(session, chain, token)
    maximum = _amount(per_withdrawal_max, token_row, "per_withdrawal_max")
    amount = _amount(daily_amount, token_row, "daily_amount")
    if daily_count is not None and daily_count < 0:
        raise InvalidLimit("daily_count", "daily_count must be zero or more, or unset")
    row = session.scalar(
        select(TierLimit)
        .where(TierLimit.tier == tier, TierLimit.token_id == token_row.id)
        .with_for_update()
    )
    before = None if row is None else _token_limits(row, token_row)
    if maximum is None and amount is None and daily_count is None:
        if row is not None:
            session.delete(row)
        return Change(before, None)
    if row is None:
        row = TierLimit(tier=tier, token_id=token_row.id)
        session.add(row)
    row.per_withdrawal_max, row.daily_amount, row.daily_count = maximum, amount, daily_count
    session.flush()
    return Change(before, _token_limits(row, token_row))


def assign_user_tier(
    session: Session, partner_id: str, user_ref: str, tier: str | None
) -> Change[str]:
    """Put a partner's user in a tier (None: back to the partner's default tier). Before and
    after are the assigned tier, None when the user had or has none of its own."""
    if not USER_REF.match(user_ref):
        raise TierAdminError("user_ref", f"user_ref {USER_REF_RULE}")
    return _assign(session, partner_id, user_ref, tier)


def set_partner_default_tier(session: Session, partner_id: str, tier: str | None) -> Change[str]:
    """The tier of the partner's users without one of their own (None: `standard`)."""
    return _assign(session, partner_id, PARTNER_DEFAULT, tier)


def set_partner_daily_limit(
    session: Session,
    partner_id: str,
    token: str,
    daily_amount: str | None,
    *,
    chain: str = DEFAULT_CHAIN,
) -> Change[str]:
    """Set the partner-wide limit for a token per rolling 24 hours (None removes it); before
    and after as decimal strings."""
    _partner(session, partner_id)
    token_row = _token(session, chain, token)
    amount = _amount(daily_amount, token_row, "daily_amount")
    row = session.scalar(
        select(PartnerLimit)
        .where(PartnerLimit.partner_id == partner_id, PartnerLimit.token_id == token_row.id)
        .with_for_update()
    )
    before = None if row is None else format_amount(row.daily_amount, token_row.decimals)
    if amount is None:
        if row is not None:
            session.delete(row)
        return Change(before, None)
    if row is None:
        row = PartnerLimit(partner_id=partner_id, token_id=token_row.id, daily_amount=amount)
        session.add(row)
    row.daily_amount = amount
    session.flush()
    return Change(before, format_amount(amount, token_row.decimals))


def _assign(session: Session, partner_id: str, user_ref: str, tier: str | None) -> Change[str]:
    _partner(session, partner_id)
    if tier is not None:
        _tier(session, tier)
    row = session.scalar(
        select(UserTier)
        .where(UserTier.partner_id == partner_id, UserTier.user_ref == user_ref)
        .with_for_update()
    )
    before = None if row is None else row.tier
    if tier is None or (user_ref == PARTNER_DEFAULT and tier == DEFAULT_TIER):
        if row is not None:
            session.delete(row)
        session.flush()
        return Change(before, None)
    if row is None:
        row = UserTier(partner_id=partner_id, user_ref=user_ref, tier=tier)
        session.add(row)
    row.tier = tier
    session.flush()
    return Change(before, tier)


def _token_limits(row: TierLimit, token: Token) -> TokenLimits:
    def text(value: int | None) -> str | None:
        return None if value is None else format_amount(value, token.decimals)

    return TokenLimits(
        token.chain,
        token.symbol,
        text(row.per_withdrawal_max),
        text(row.daily_amount),
        row.daily_count,
    )


def _amount(text: str | None, token: Token, field: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_amount(text, token.decimals)
    except AmountError as exc:
        raise InvalidLimit(field, f"{field} {exc}") from None


def _tier(session: Session, name: str) -> None:
    if session.get(LimitTier, name) is None:
        known = ", ".join(session.scalars(select(LimitTier.name).order_by(LimitTier.name)))
        raise UnknownTier("tier", f"{quoted(name)} is not a tier; known: {known}")


def _token(session: Session, chain: str, symbol: str) -> Token:
    row = session.scalar(select(Token).where(Token.chain == chain, Token.symbol == symbol))
    if row is None:
        raise UnknownToken("token", f"{quoted(symbol)} is not a token on {quoted(chain)}")
    return row


def _partner(session: Session, partner_id: str) -> None:
    if session.get(Partner, partner_id) is None:
        raise UnknownPartner("partner_id", f"{quoted(partner_id)} is not a partner")
