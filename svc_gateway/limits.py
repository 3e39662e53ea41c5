"""Per-user and partner-wide limits, enforced inside the group commit's transaction.

What counts: a limit scope is a partner (`user_ref` "") or one of its end users, per token.
Its usage is the amount and number of its withdrawals created in the last 24 hours that did
not end REJECTED, CANCELLED or FAILED. The window rolls at one-minute resolution: a
withdrawal counts from its creation until 24 h to 24 h + 1 min later, never less than 24 h,
so no 24-hour period can hold more than a limit.

How it is kept, and why: the gateway adds every withdrawal a limit applies to into per-minute
counters (`limit_usage`, a row per scope, minute and shard), in the transaction that stores the
withdrawal, and stamps the withdrawal with its minute (`withdrawals.limit_bucket`). A scope's
usage is the sum of its counters of the window's 1,441 minutes at most, minus its stamped
withdrawals in the window that ended REJECTED, CANCELLED or FAILED, read through the index
(partner_id, state, id) from the id `released_floor` gives (ids sort by their creation time,
and a withdrawal's minute is that of a moment before its id was made; an hour's margin
covers a clock stepped back): releases are rare, so that read is short, and a release
needs no write of its own — whichever service moves a withdrawal to one of those states frees
its amount by that move alone, and a crash can leak nothing, since counters and withdrawals
commit or roll back together. Summing the withdrawals themselves instead would read every
withdrawal of a busy partner's last 24 hours in every batch.

Concurrency: a scope's counters are kept per minute and per shard (`limit_usage.shard`, 0 to
`SHARDS` - 1), and each shard has a lock row (bucket 0). A transaction that counts in a scope
holds one shard's lock row of it, taken before its usage read by an INSERT ... ON DUPLICATE KEY
UPDATE (which creates the row on first use and locks it either way) and held until COMMIT, and
writes only that shard's counter rows. Its shard comes from a pool per process (`ShardPool`,
offset by GATEWAY_WORKER_INDEX), so the group commits in flight in one process, and those of
the other workers, hold different shards and do not wait for each other. Under READ COMMITTED
its usage read (every shard's counters) sees every transaction of the scope committed before
the read; it cannot see those in flight on the scope's other shards, at most `SHARDS` - 1, one
per shard. So on one shard a transaction accepts only what passes the plain check (usage +
request <= limit, item by item) and, for each limit of each scope it counts in, the shard rule:
it adds at most `share` = limit // (4 * `SHARDS`), and the usage it read plus what it adds plus
(`SHARDS` - 1) * `share` is within the limit (`short_scopes`).

Why that is exact: take the transactions of a scope whose withdrawals lie in one 24-hour
period, and among them T, the one that read last. Each other either committed before T's read
(T counted it) or still held its lock row then (it had read earlier and commits later): at
most one per other shard, none on T's shard (T held it), none holding every shard, each adding
at most `share`. So the period holds at most T's usage + T's amount + (`SHARDS` - 1) * `share`
<= the limit (and when T held every shard, T's usage + T's amount). A refusal on one shard is
right as well: the usage read only misses what others add.

When the shard rule does not hold for a scope (its usage and the batch past 13/16 of a limit,
a batch adding more than a share, or a limit too small to share, such as 3 withdrawals a day)
the transaction rolls back before writing anything and starts again holding every shard of
that scope: nothing else of the scope is in flight then, and the plain check alone decides,
so nothing within the limit is refused. Locks are taken in one statement in (partner,
user_ref, token, shard) order, and that retry gives its locks back before taking more, so no
two transactions wait for each other in a cycle. A CSV batch file's transaction holds every
shard of its scopes. `SHARDS` must be the same in every gateway process (the rule counts the
others in flight by it): change it only with every gateway stopped. The limits are each
process's cached policy, as for every check here.

Not adopted: holding the one lock row for less time by taking it after the INSERTs, just
before COMMIT. The usage must still be read under the lock (a read before it misses a batch
that commits in between, and both could fit alone and exceed together), so the lock is held
for the read, the counter update and COMMIT with its log flush, and every batch of a partner
still waits for the previous one's; a refusal found that late must also delete its rows.
Counting in a transaction of its own ahead of the INSERTs would leak the amount on a crash in
between. On SQLite the transaction's BEGIN IMMEDIATE already serialises writers: no lock
statement is sent and the plain check decides. A batch whose items share no scope with
another's does not wait for it.

Cost per batch with limits: the user assignments of its users (one SELECT, also needed for
the default priority), the lock, the usage read (one statement: counters and releases), the
inserts, the counter update, COMMIT; a scope's counters are up to `SHARDS` rows per minute.
The gateway's group commit sends them in one round trip on MariaDB while the batch's scopes
are far from their limits: the usage read then sets a session variable that a guard
statement turns into a SIGNAL when some limit is near (`far_from_limits`), and only then is
the batch decided on a second round trip, after a rollback.
A batch none of whose items any limit applies to (and every batch while no limit is
configured) is written exactly as without limits.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from withdrawal_shared.ids import ulid_floor
from withdrawal_shared.states import State

_Column = ColumnElement[Any] | QueryableAttribute[Any]
WINDOW_SECONDS = 24 * 3600
BUCKET_SECONDS = 60
LOCK_BUCKET = 0
SHARDS = 4
"""Lock rows and counter rows per scope and minute: up to SHARDS transactions of a scope run at
once. The same in every gateway process (see the module docstring)."""
SHARE_DIVISOR = 4 * SHARDS
"""A transaction on one shard adds at most limit // SHARE_DIVISOR to a scope: the shard rule
reserves (SHARDS - 1) such shares, 3/16 of the limit, for the others in flight."""
RELEASED = (State.REJECTED.value, State.CANCELLED.value, State.FAILED.value)
RELEASED_ID_MARGIN_SECONDS = 3600
"""How long before a window's first minute the ids of its released withdrawals are read
from (`released_floor`). Were an id ever older than its minute by more, its release would
go uncounted, and its scope's usage read too high: refusals, never an excess."""

PER_WITHDRAWAL = "PER_WITHDRAWAL"
USER_DAILY_AMOUNT = "USER_DAILY_AMOUNT"
USER_DAILY_COUNT = "USER_DAILY_COUNT"
PARTNER_DAILY_AMOUNT = "PARTNER_DAILY_AMOUNT"
LIMIT_COLUMNS = ("partner_id", "user_ref", "token_id", "bucket", "shard", "amount", "count")


def bucket_of(moment: dt.datetime) -> int:
    """The minute since the epoch of a naive UTC time."""
    return int(moment.replace(tzinfo=dt.UTC).timestamp()) // BUCKET_SECONDS


def released_floor(start_bucket: int) -> str:
    """The smallest withdrawal id the released withdrawals of the window from `start_bucket`
    can have, less `RELEASED_ID_MARGIN_SECONDS`: it bounds their read to the window through
    the index (partner_id, state, id)."""
    return ulid_floor((start_bucket * BUCKET_SECONDS - RELEASED_ID_MARGIN_SECONDS) * 1000)


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


def _additions(
    items: Sequence[tuple[int, ItemLimits]], refused: Collection[int]
) -> tuple[dict[Scope, Usage], dict[Scope, tuple[int | None, int | None]]]:
    """What the items of `items` not in `refused` add to each scope they count in, and that
    scope's (amount, count) 24-hour limits."""
    added: dict[Scope, Usage] = {}
    bounds: dict[Scope, tuple[int | None, int | None]] = {}
    for index, item in items:
        if index in refused or not item.counted:
            continue
        partner, *user = item.scopes()
        limited: list[tuple[Scope, tuple[int | None, int | None]]] = [
            (partner, (item.partner_daily, None))
        ]
        if user:
            tier = item.tier_limits
            limited.append((user[0], (tier.daily_amount, tier.daily_count)))
        for scope, limits in limited:
            used = added.setdefault(scope, Usage())
            used.amount += item.amount
            used.count += 1
            bounds[scope] = limits
    return added, bounds


def short_scopes(
    items: Sequence[tuple[int, ItemLimits]], refused: Collection[int], usage: Mapping[Scope, Usage]
) -> set[Scope]:
    """The scopes where the items of `items` not in `refused` break the shard rule: for some
    limit of the scope they add more than its share, or the usage read plus what they add
    plus the other shards' shares is above it (see the module docstring)."""
    added, bounds = _additions(items, refused)
    short: set[Scope] = set()
    for scope, more in added.items():
        amount_limit, count_limit = bounds[scope]
        before = usage.get(scope, Usage())
        if not (
            _fits_shard(before.amount, more.amount, amount_limit)
            and _fits_shard(before.count, more.count, count_limit)
        ):
            short.add(scope)
    return short


def _fits_shard(used: int, more: int, limit: int | None) -> bool:
    if limit is None:
        return True
    room = shard_room(more, limit)
    return room is not None and used <= room


def shard_room(more: int, limit: int) -> int | None:
    """The most a scope's usage read may be for a transaction on one shard to add `more`
    under `limit` (the shard rule: `more` at most a share, and room left for the other
    shards' shares); None when `more` is above a share."""
    share = limit // SHARE_DIVISOR
    return limit - more - (SHARDS - 1) * share if more <= share else None


NEAR_LIMIT = "aws: a 24-hour limit is near"
"""The MESSAGE_TEXT of the guard's SIGNAL (`far_from_limits`)."""
ER_SIGNAL_EXCEPTION = 1644
"""MariaDB's error number for a SIGNAL with SQLSTATE 45000."""
GUARD = (
    "BEGIN NOT ATOMIC IF @aws_near_limit THEN "
    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{NEAR_LIMIT}'; END IF; END"
)
"""MariaDB compound statement: SIGNALs `NEAR_LIMIT` when `FarPlan.read` found a limit near.
The read itself stays a plain SELECT ... INTO: a subquery in the compound statement's IF
would be a locking read, waiting for the other shards' transactions in flight."""


@dataclass(frozen=True, slots=True)
class FarPlan:
    """A counted batch decided in one round trip (`far_from_limits`)."""

    read: str  # driver SQL with format parameters: sets @aws_near_limit
    params: list[object]
    refused: dict[int, Refusal]  # the per-withdrawal refusals, which need no usage


def far_from_limits(items: Sequence[tuple[int, ItemLimits]], start_bucket: int) -> FarPlan | None:
    """The batch's decision should the usage of every scope it counts in leave room for it
    under the shard rule, and a read that checks exactly that: it reads the usage as
    `usage_sql` does and sets @aws_near_limit when some scope's usage is above its
    `shard_room`, for `GUARD` to SIGNAL. Sent between the lock rows and the INSERTs (MariaDB),
    they let a batch far from its limits (the usual case) commit in one round trip: when the
    guard passes, `decide` and `short_scopes` on that read would refuse nothing more and take
    no scope whole. When it signals, the transaction is rolled back and decided on a read of
    its own as before. None when no usage would let every item through on one shard (that
    path is then taken at once)."""
    refused: dict[int, Refusal] = {}
    for index, item in items:
        refusal = per_withdrawal_refusal(item)
        if refusal is not None:
            refused[index] = refusal
    added, bounds = _additions(items, refused)
    if not added:
        return None
    tests: list[str] = []
    params: list[object] = []
    for scope in sorted(added):
        more = added[scope]
        if scope.user_ref:
            match = "u.partner_id = %s AND u.token_id = %s AND u.user_ref = %s"
            match_params: list[object] = [scope.partner_id, scope.token_id, scope.user_ref]
        else:  # the partner's own counters, and every release of its withdrawals
            match = "u.partner_id = %s AND u.token_id = %s AND (u.user_ref = '' OR u.sign < 0)"
            match_params = [scope.partner_id, scope.token_id]
        amount_limit, count_limit = bounds[scope]
        for column, adds, limit in (
            ("amount", more.amount, amount_limit),
            ("n", more.count, count_limit),
        ):
            if limit is None:
                continue
            room = shard_room(adds, limit)
            if room is None or room < 0:
                return None
            tests.append(f"COALESCE(SUM(CASE WHEN {match} THEN u.sign * u.{column} END), 0) > %s")
            params += [*match_params, room]
    if not tests:
        return None
    read, read_params = usage_sql(added, start_bucket)
    # Fixed SQL text; every value is a parameter.
    near = f"SELECT {' OR '.join(tests)} INTO @aws_near_limit FROM ({read}) AS u"  # noqa: S608
    return FarPlan(near, [*params, *read_params], refused)


def near_limit(error: BaseException) -> bool:
    """Whether a driver error is `far_from_limits`'s guard refusing the one-round-trip path."""
    args: tuple[object, ...] = error.args
    return args[:2] == (ER_SIGNAL_EXCEPTION, NEAR_LIMIT)


class ShardPool:
    """The shards this process's transactions hold, one each while it runs: the free ones
    first (starting at `first`, so that processes given different offsets use different
    shards), the next in turn when every shard is taken (it waits for that shard's holder)."""

    def __init__(self, first: int = 0) -> None:
        self._free = deque((first + i) % SHARDS for i in range(SHARDS))  # append/pop: atomic
        self._turn = itertools.count(first)

    @contextmanager
    def shard(self) -> Iterator[int]:
        try:
            shard: int | None = self._free.popleft()
        except IndexError:
            shard = None
        if shard is None:
            yield next(self._turn) % SHARDS
            return
        try:
            yield shard
        finally:
            self._free.appendleft(shard)  # this process's first shards come back first


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


def lock_rows(
    scopes: Iterable[Scope], shard: int, whole: Collection[Scope]
) -> list[dict[str, object]]:
    return [
        {
            "partner_id": s.partner_id,
            "user_ref": s.user_ref,
            "token_id": s.token_id,
            "bucket": LOCK_BUCKET,
            "shard": n,
            "amount": 0,
            "count": 0,
        }
        for s in sorted(set(scopes))
        for n in (range(SHARDS) if s in whole else (shard,))
    ]


def prune_usage(connection: Connection, now: dt.datetime) -> int:
    """Delete the counters no window can read any more (older than the window's start, with
    one minute to spare); the scopes' lock rows (bucket 0) stay. Returns how many went.

    One DELETE per scope, over its primary-key range from bucket 1: it never touches the
    lock rows that creates hold while they count, so it waits for no batch."""
    cutoff = window_start(now) - 1
    scopes = connection.execute(
        select(LimitUsage.partner_id, LimitUsage.user_ref, LimitUsage.token_id)
        .where(LimitUsage.bucket == LOCK_BUCKET)
        .distinct()
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


def lock_scopes(
    connection: Connection, scopes: Iterable[Scope], shard: int, whole: Collection[Scope] = ()
) -> None:
    """Lock the lock row of `shard` of each scope, and of every shard of the scopes in
    `whole` (creating them), in (scope, shard) order; MariaDB/MySQL only (SQLite's BEGIN
    IMMEDIATE holds the database's write lock already)."""
    if connection.dialect.name == "sqlite":
        return
    statement = mysql.insert(LimitUsage).values(lock_rows(scopes, shard, whole))
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
            Withdrawal.id >= released_floor(start_bucket),
            Withdrawal.limit_bucket >= start_bucket,
        )
        .group_by(Withdrawal.partner_id, Withdrawal.user_ref, Withdrawal.token_id)
    )
    return usage_from(connection.execute(union_all(counters, released)), wanted)


USAGE_SQL = (
    "SELECT 1 AS sign, partner_id, user_ref, token_id, SUM(amount) AS amount, SUM(count) AS n "
    "FROM limit_usage "
    "WHERE bucket >= %s AND ({scopes}) GROUP BY partner_id, user_ref, token_id "
    "UNION ALL "
    "SELECT -1, partner_id, user_ref, token_id, SUM(amount), COUNT(*) FROM withdrawals "
    "WHERE partner_id IN ({partners}) AND state IN ({released}) AND id >= %s "
    "AND limit_bucket >= %s "
    "GROUP BY partner_id, user_ref, token_id"
)


def usage_sql(scopes: Collection[Scope], start_bucket: int) -> tuple[str, list[object]]:
    """`read_usage`'s statement as driver SQL for MariaDB/MySQL (format parameters), and its
    parameters: read with `usage_from`."""
    ordered = sorted(set(scopes))
    partners = sorted({s.partner_id for s in ordered})
    sql = USAGE_SQL.format(
        scopes=" OR ".join(
            ["(partner_id = %s AND user_ref = %s AND token_id = %s)"] * len(ordered)
        ),
        partners=", ".join(["%s"] * len(partners)),
        released=", ".join(["%s"] * len(RELEASED)),
    )
    params: list[object] = [start_bucket]
    for s in ordered:
        params += [s.partner_id, s.user_ref, s.token_id]
    return sql, [*params, *partners, *RELEASED, released_floor(start_bucket), start_bucket]


def usage_from(rows: Iterable[Any], scopes: Collection[Scope]) -> dict[Scope, Usage]:
    """Each scope's usage from the rows of the usage statement: (sign, partner_id, user_ref,
    token_id, amount, count), +1 for counters, -1 for releases."""
    usage = {scope: Usage() for scope in scopes}
    for sign, partner_id, user_ref, token_id, amount, count in rows:
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


def add_usage(
    connection: Connection, counted: Iterable[tuple[ItemLimits, int]], shard: int
) -> None:
    """Add the accepted (item, bucket) pairs to their scopes' counters of `shard`, whose lock
    rows the transaction holds (one statement)."""
    rows = counter_rows(counted, shard)
    if not rows:
        return
    if connection.dialect.name == "sqlite":
        lite = sqlite.insert(LimitUsage).values(rows)
        connection.execute(
            lite.on_conflict_do_update(
                index_elements=["partner_id", "user_ref", "token_id", "bucket", "shard"],
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


def counter_rows(counted: Iterable[tuple[ItemLimits, int]], shard: int) -> list[dict[str, Any]]:
    """The counter rows (`LIMIT_COLUMNS`) of `shard` that the accepted (item, bucket) pairs
    add to, in key order."""
    totals: dict[tuple[Scope, int], Usage] = {}
    for item, bucket in counted:
        for scope in item.scopes():
            used = totals.setdefault((scope, bucket), Usage())
            used.amount += item.amount
            used.count += 1
    return [
        {
            "partner_id": scope.partner_id,
            "user_ref": scope.user_ref,
            "token_id": scope.token_id,
            "bucket": bucket,
            "shard": shard,
            "amount": used.amount,
            "count": used.count,
        }
        for (scope, bucket), used in sorted(totals.items(), key=lambda kv: kv[0])
    ]


def counter_statements() -> tuple[Any, Any]:
    """The MariaDB/MySQL statements that take lock rows (`lock_rows`) and add to counters
    (`counter_rows`), for one row each (a driver's executemany sends them as one)."""
    lock = mysql.insert(LimitUsage)
    add = mysql.insert(LimitUsage)
    return (
        lock.on_duplicate_key_update(count=LimitUsage.count),
        add.on_duplicate_key_update(
            amount=_number(LimitUsage.amount) + _number(add.inserted.amount),
            count=LimitUsage.count + add.inserted.count,
        ),
    )
