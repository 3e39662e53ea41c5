"""Per-user and partner-wide limits, enforced inside the group commit's transaction.

What counts: a limit scope is a partner (`user_ref` "") or one of its end users, per token.
Its usage is the amount and number of its withdrawals created in the last 24 hours that did
not end REJECTED, CANCELLED or FAILED. The window rolls at one-minute resolution: a
withdrawal counts from its creation until 24 h to 24 h + 1 min later, never less than 24 h,
so no 24-hour period can hold more than a limit.

How it is kept, and why: the gateway adds every withdrawal a limit applies to into per-minute
counters (`limit_usage`, one row per scope and minute), in the transaction that stores the
withdrawal, and stamps the withdrawal with its minute (`withdrawals.limit_bucket`). A scope's
usage is the sum of its counters of the window's 1,441 minutes at most, minus its stamped
withdrawals in the window that ended REJECTED, CANCELLED or FAILED, read through the index
(partner_id, state, limit_bucket): releases are rare, so that read is short, and a release
needs no write of its own — whichever service moves a withdrawal to one of those states frees
its amount by that move alone, and a crash can leak nothing, since counters and withdrawals
commit or roll back together. Summing the withdrawals themselves instead would read every
withdrawal of a busy partner's last 24 hours in every batch.

Concurrency: before reading, a batch locks one row per scope it counts in (the scope's
counter row of bucket 0, created on first use by the same INSERT ... ON DUPLICATE KEY UPDATE,
which takes an exclusive lock either way), all in one statement in (partner, user_ref, token)
order, so batches of several gateway processes wait for each other per scope and never lock
in opposite orders. Under READ COMMITTED the read that follows sees every batch committed
before the lock was granted. On SQLite the transaction's BEGIN IMMEDIATE already serialises
writers, so no lock statement is sent. A batch whose items share no scope with another's does
not wait for it.

Cost per batch with limits: the user assignments of its users (one SELECT, also needed for
the default priority), the lock, the usage read (one statement: counters and releases), the
inserts, the counter update, COMMIT. A batch none of whose items any limit applies to (and
every batch while no limit is configured) is written exactly as without limits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Numeric,
    and_,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from svc_gateway.errors import LIMIT_EXCEEDED
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.db.limit_policy import LimitPolicy, TierLimits
from withdrawal_shared.db.models import LimitUsage, Withdrawal
from withdrawal_shared.db.reference import TokenInfo
from withdrawal_shared.errors import ApiError
from withdrawal_shared.states import State

_Column = ColumnElement[Any] | QueryableAttribute[Any]
WINDOW_SECONDS = 24 * 3600
BUCKET_SECONDS = 60
LOCK_BUCKET = 0
RELEASED = (State.REJECTED.value, State.CANCELLED.value, State.FAILED.value)

PER_WITHDRAWAL = "PER_WITHDRAWAL"
USER_DAILY_AMOUNT = "USER_DAILY_AMOUNT"
USER_DAILY_COUNT = "USER_DAILY_COUNT"
PARTNER_DAILY_AMOUNT = "PARTNER_DAILY_AMOUNT"


def bucket_of(moment: dt.datetime) -> int:
    """The minute since the epoch of a naive UTC time."""
    return int(moment.replace(tzinfo=dt.UTC).timestamp()) // BUCKET_SECONDS


def window_start(now: dt.datetime) -> int:
    """The oldest bucket still in the window at `now`: a withdrawal counts until 24 hours
    after the end of its minute."""
    return (int(now.replace(tzinfo=dt.UTC).timestamp()) - WINDOW_SECONDS) // BUCKET_SECONDS


@dataclass(frozen=True, order=True, slots=True)
class Scope:
    partner_id: str
    user_ref: str  # "" for the partner as a whole
    token_id: int


@dataclass(slots=True)
class Usage:
    amount: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class ItemLimits:
    """The limits that apply to one request."""

    partner_id: str
    user_ref: str
    token_id: int
    amount: int
    tier: str  # the user's tier ("" without user_ref)
    tier_limits: TierLimits
    partner_daily: int | None

    @property
    def counted(self) -> bool:
        """Whether a rolling-24-hour limit applies, so it must be counted (in every scope)."""
        return self.partner_daily is not None or (bool(self.user_ref) and self.tier_limits.daily)

    def scopes(self) -> tuple[Scope, ...]:
        partner = Scope(self.partner_id, "", self.token_id)
        if not self.user_ref:
            return (partner,)
        return (partner, Scope(self.partner_id, self.user_ref, self.token_id))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit a request would exceed."""

    limit: str  # PER_WITHDRAWAL, USER_DAILY_AMOUNT, USER_DAILY_COUNT, PARTNER_DAILY_AMOUNT
    tier: str  # "" for the partner-wide limit
    value: int  # base units, or a count for USER_DAILY_COUNT


def item_limits(
    policy: LimitPolicy, partner_id: str, user_ref: str, token_id: int, amount: int, tier: str
) -> ItemLimits:
    return ItemLimits(
        partner_id=partner_id,
        user_ref=user_ref,
        token_id=token_id,
        amount=amount,
        tier=tier,
        tier_limits=policy.tier_limits(tier, token_id) if user_ref else TierLimits(),
        partner_daily=policy.partner_daily.get((partner_id, token_id)),
    )


def per_withdrawal_refusal(item: ItemLimits) -> Refusal | None:
    maximum = item.tier_limits.per_withdrawal_max
    if maximum is not None and item.amount > maximum:
        return Refusal(PER_WITHDRAWAL, item.tier, maximum)
    return None


def decide(
    items: Sequence[tuple[int, ItemLimits]], usage: Mapping[Scope, Usage]
) -> dict[int, Refusal]:
    """The refusals among `items` (index, limits) taken in order: each is checked against the
    usage plus the batch's items accepted before it, and counted once accepted."""
    current = {scope: Usage(u.amount, u.count) for scope, u in usage.items()}
    refused: dict[int, Refusal] = {}
    for index, item in items:
        refusal = per_withdrawal_refusal(item)
        if refusal is None and item.counted:
            refusal = _daily_refusal(item, current)
        if refusal is not None:
            refused[index] = refusal
            continue
        if item.counted:
            for scope in item.scopes():
                used = current.setdefault(scope, Usage())
                used.amount += item.amount
                used.count += 1
    return refused


def _daily_refusal(item: ItemLimits, current: Mapping[Scope, Usage]) -> Refusal | None:
    partner, *user = item.scopes()
    if item.partner_daily is not None:
        used = current.get(partner, Usage())
        if used.amount + item.amount > item.partner_daily:
            return Refusal(PARTNER_DAILY_AMOUNT, "", item.partner_daily)
    if user:
        used = current.get(user[0], Usage())
        limits = item.tier_limits
        if limits.daily_amount is not None and used.amount + item.amount > limits.daily_amount:
            return Refusal(USER_DAILY_AMOUNT, item.tier, limits.daily_amount)
        if limits.daily_count is not None and used.count + 1 > limits.daily_count:
            return Refusal(USER_DAILY_COUNT, item.tier, limits.daily_count)
    return None


def limit_exceeded(refusal: Refusal, token: TokenInfo, user_ref: str) -> ApiError:
    """The FAILED_PRECONDITION a refused request answers with, naming the limit."""
    if refusal.limit == USER_DAILY_COUNT:
        value = str(refusal.value)
        what = f"{value} withdrawals per 24 hours"
    else:
        value = format_amount(refusal.value, token.decimals)
        per = "per withdrawal" if refusal.limit == PER_WITHDRAWAL else "per 24 hours"
        what = f"{value} {token.symbol} {per}"
    if refusal.limit == PARTNER_DAILY_AMOUNT:
        message = (
            f"The withdrawal would take your account above its limit of {what}; nothing was "
            "stored. Retry once earlier withdrawals leave the 24-hour window, or ask for a "
            "higher limit."
        )
    elif refusal.limit == PER_WITHDRAWAL:
        message = (
            f"The amount is above the {refusal.tier} tier's limit of {what} for user "
            f"{user_ref!r}; nothing was stored. Send a smaller amount."
        )
    else:
        message = (
            f"The withdrawal would take user {user_ref!r} above the {refusal.tier} tier's "
            f"limit of {what}; nothing was stored. Retry once earlier withdrawals leave the "
            "24-hour window, or move the user to another tier."
        )
    metadata = {
        "limit": refusal.limit,
        "limit_value": value,
        "window": "withdrawal" if refusal.limit == PER_WITHDRAWAL else "24h",
        "token": token.symbol,
    }
    if refusal.tier:
        metadata["tier"] = refusal.tier
    return LIMIT_EXCEEDED.error(message, metadata=metadata)


def _scope_rows(scopes: Iterable[Scope], bucket: int) -> list[dict[str, object]]:
    return [
        {
            "partner_id": s.partner_id,
            "user_ref": s.user_ref,
            "token_id": s.token_id,
            "bucket": bucket,
            "amount": 0,
            "count": 0,
        }
        for s in sorted(set(scopes))
    ]


def prune_usage(connection: Connection, now: dt.datetime) -> int:
    """Delete the counters no window can read any more (older than the window's start, with
    one minute to spare); the scopes' lock rows (bucket 0) stay. Returns how many went.

    One DELETE per scope, over its primary-key range from bucket 1: it never touches the
    lock rows that creates hold while they count, so it waits for no batch."""
    cutoff = window_start(now) - 1
    scopes = connection.execute(
        select(LimitUsage.partner_id, LimitUsage.user_ref, LimitUsage.token_id).where(
            LimitUsage.bucket == LOCK_BUCKET
        )
    ).all()
    deleted = 0
    for scope in scopes:
        result = connection.execute(
            delete(LimitUsage).where(
                LimitUsage.partner_id == scope.partner_id,
                LimitUsage.user_ref == scope.user_ref,
                LimitUsage.token_id == scope.token_id,
                LimitUsage.bucket > LOCK_BUCKET,
                LimitUsage.bucket < cutoff,
            )
        )
        deleted += int(result.rowcount or 0)
    return deleted


def lock_scopes(connection: Connection, scopes: Iterable[Scope]) -> None:
    """Lock each scope's row of bucket 0 (creating it), in scope order; MariaDB/MySQL only
    (SQLite's BEGIN IMMEDIATE holds the database's write lock already)."""
    if connection.dialect.name == "sqlite":
        return
    rows = _scope_rows(scopes, LOCK_BUCKET)
    statement = mysql.insert(LimitUsage).values(rows)
    connection.execute(statement.on_duplicate_key_update(count=LimitUsage.count))


def _amount_sum(column: _Column, dialect: str) -> ColumnElement[object]:
    # Amounts are text on SQLite: summed as integers there (an overflow is an error, never a
    # float); DECIMAL(65,0) on MariaDB sums exactly.
    return func.sum(cast(column, BigInteger) if dialect == "sqlite" else column)


def read_usage(
    connection: Connection, scopes: Iterable[Scope], start_bucket: int
) -> dict[Scope, Usage]:
    """Each scope's usage in the window from `start_bucket`: its counters minus its counted
    withdrawals that ended REJECTED, CANCELLED or FAILED (one statement)."""
    wanted = set(scopes)
    if not wanted:
        return {}
    dialect = connection.dialect.name
    counters = select(
        literal(1).label("sign"),
        LimitUsage.partner_id,
        LimitUsage.user_ref,
        LimitUsage.token_id,
        _amount_sum(LimitUsage.amount, dialect).label("amount"),
        func.sum(LimitUsage.count).label("n"),
    ).where(
        LimitUsage.bucket >= start_bucket,
        or_(
            *(
                and_(
                    LimitUsage.partner_id == s.partner_id,
                    LimitUsage.user_ref == s.user_ref,
                    LimitUsage.token_id == s.token_id,
                )
                for s in sorted(wanted)
            )
        ),
    )
    counters = counters.group_by(LimitUsage.partner_id, LimitUsage.user_ref, LimitUsage.token_id)
    released = (
        select(
            literal(-1).label("sign"),
            Withdrawal.partner_id,
            Withdrawal.user_ref,
            Withdrawal.token_id,
            _amount_sum(Withdrawal.amount, dialect).label("amount"),
            func.count().label("n"),
        )
        .where(
            Withdrawal.partner_id.in_(sorted({s.partner_id for s in wanted})),
            Withdrawal.state.in_(RELEASED),
            Withdrawal.limit_bucket >= start_bucket,
        )
        .group_by(Withdrawal.partner_id, Withdrawal.user_ref, Withdrawal.token_id)
    )
    usage = {scope: Usage() for scope in wanted}
    for sign, partner_id, user_ref, token_id, amount, count in connection.execute(
        union_all(counters, released)
    ):
        amount_int = _exact(amount)
        targets = [Scope(partner_id, user_ref, token_id)]
        if sign < 0 and user_ref:  # a user's release frees the partner's amount too
            targets.append(Scope(partner_id, "", token_id))
        for scope in targets:
            used = usage.get(scope)
            if used is not None:
                used.amount += sign * amount_int
                used.count += sign * int(count)
    return usage


def _exact(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, float):
        raise TypeError("an amount sum came back as a float")
    as_int = int(str(value))
    return as_int


def _number(column: _Column) -> ColumnElement[Any]:
    """An amount column as a number in SQL (IntegerAmount's `+` would concatenate text)."""
    return type_coerce(column, Numeric())


def add_usage(connection: Connection, counted: Iterable[tuple[ItemLimits, int]]) -> None:
    """Add the accepted (item, bucket) pairs to their scopes' counters (one statement)."""
    totals: dict[tuple[Scope, int], Usage] = {}
    for item, bucket in counted:
        for scope in item.scopes():
            used = totals.setdefault((scope, bucket), Usage())
            used.amount += item.amount
            used.count += 1
    if not totals:
        return
    rows = [
        {
            "partner_id": scope.partner_id,
            "user_ref": scope.user_ref,
            "token_id": scope.token_id,
            "bucket": bucket,
            "amount": used.amount,
            "count": used.count,
        }
        for (scope, bucket), used in sorted(totals.items(), key=lambda kv: kv[0])
    ]
    if connection.dialect.name == "sqlite":
        lite = sqlite.insert(LimitUsage).values(rows)
        connection.execute(
            lite.on_conflict_do_update(
                index_elements=["partner_id", "user_ref", "token_id", "bucket"],
                set_={
                    "amount": _number(LimitUsage.amount) + _number(lite.excluded.amount),
                    "count": LimitUsage.count + lite.excluded.count,
                },
            )
        )
        return
    my = mysql.insert(LimitUsage).values(rows)
    connection.execute(
        my.on_duplicate_key_update(
            amount=_number(LimitUsage.amount) + _number(my.inserted.amount),
            count=LimitUsage.count + my.inserted.count,
        )
    )
