"""The gateway's database work, synchronous (run on the core's thread pool)."""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeAlias, TypeVar

from pymysql.cursors import RE_INSERT_VALUES  # type: ignore[import-untyped]
from sqlalchemy import Connection, Engine, PoolProxiedConnection, and_, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from svc_gateway.errors import (
    CLIENT_REFERENCE_REUSED,
    CONCURRENT_MODIFICATION,
    IDEMPOTENCY_KEY_REUSED,
    WITHDRAWAL_NOT_CANCELLABLE,
)
from svc_gateway.limits import (
    GUARD,
    LIMIT_COLUMNS,
    ItemLimits,
    Refusal,
    Scope,
    ShardPool,
    add_usage,
    bucket_of,
    counter_rows,
    counter_statements,
    decide,
    far_from_limits,
    item_limits,
    limit_exceeded,
    lock_rows,
    lock_scopes,
    near_limit,
    prune_usage,
    read_usage,
    short_scopes,
    usage_from,
    usage_sql,
    window_start,
)
from svc_gateway.listing import ListFilter
from svc_gateway.listing_sql import filter_conditions
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db import api_keys
from withdrawal_shared.db.engine import make_sessionmaker
from withdrawal_shared.db.limit_policy import LimitPolicy, LimitPolicyCache, assigned_tiers
from withdrawal_shared.db.models import PayoutTransaction, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ReferenceCache, ReferenceData
from withdrawal_shared.db.sql_text import quoting as sql_quoting
from withdrawal_shared.db.sql_text import row_values
from withdrawal_shared.db.transitions import (
    Moved,
    TransitionConflict,
    creation_audit,
    move,
    record_creation,
    utcnow,
)
from withdrawal_shared.errors import ApiError
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.metrics import LIMIT_REFUSALS
from withdrawal_shared.states import CANCELLABLE, Priority, State

ACTOR_PARTNER = "partner:"
RECEIVED_MESSAGE = "Accepted; waiting for the processor."
EMERGENCY_REASON = "EMERGENCY_REQUEST"
"""The creation audit row's reason for a withdrawal requested with PRIORITY_EMERGENCY."""


def received_audit(new: NewWithdrawal, plan: _Plan) -> tuple[str, str]:
    """(reason, message) of a new withdrawal's first audit row: an EMERGENCY request says so,
    naming the API key (its public prefix) that held the `emergency` scope."""
    if plan.priority is not Priority.EMERGENCY:
        return "", RECEIVED_MESSAGE
    key = f" by API key {new.key_prefix}" if new.key_prefix else ""
    return (
        EMERGENCY_REASON,
        f"Accepted as an EMERGENCY request{key} (scope 'emergency'); waiting for the processor.",
    )


T = TypeVar("T")
MYSQL_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: InnoDB rolled the transaction back; retry it
BATCH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CreatedWithdrawal:
    """A withdrawal as `create_many` inserted it: every column `to_proto` reads, without the
    cost of building an ORM object per request."""

    id: str
    partner_id: str
    request_id: str
    request_fingerprint: str
    client_reference: str
    chain: str
    token_id: int
    recipient: str
    amount: int
    priority: str
    state: str
    state_reason: str
    state_message: str
    tx_hash: str | None
    fee_wei: int | None
    confirmations: int
    version: int
    audit_head: str
    create_time: dt.datetime
    update_time: dt.datetime
    end_time: dt.datetime | None
    user_ref: str
    limit_bucket: int | None
    trace_context: str | None = None

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CREATED_COLUMNS}


_CREATED_COLUMNS = tuple(f.name for f in fields(CreatedWithdrawal))
_AUDIT_COLUMNS = (
    "withdrawal_id",
    "version",
    "from_state",
    "to_state",
    "actor",
    "reason",
    "message",
    "reorged",
    "occur_time",
    "prev_hash",
    "hash",
    "snapshot",
)

StoredWithdrawal: TypeAlias = Withdrawal | CreatedWithdrawal
Created: TypeAlias = tuple[StoredWithdrawal, Moved | None]
"""The stored withdrawal, and the Moved to publish when this request created it (None for a
repeat of an earlier request)."""


@dataclass(frozen=True, slots=True)
class _NewRow:
    index: int  # in the batch
    row: CreatedWithdrawal
    audit: dict[str, Any]
    moved: Moved
    limits: ItemLimits | None  # None: no limit is configured at all


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the tiers and limits decide for one request before it is written."""

    priority: Priority
    limits: ItemLimits | None
    limit_bucket: int | None  # set when a rolling-24-hour limit applies (it is counted)

    @property
    def limited(self) -> bool:
        return self.limits is not None and (
            self.limits.counted or self.limits.tier_limits.per_withdrawal_max is not None
        )


def _received_columns(new: NewWithdrawal, plan: _Plan) -> dict[str, Any]:
    """The columns of a new withdrawal, RECEIVED, that come from its request (both the single
    `create` and the group commit's rows)."""
    reason, message = received_audit(new, plan)
    return {
        "request_id": new.request_id,
        "request_fingerprint": new.fingerprint,
        "client_reference": new.client_reference,
        "chain": new.chain,
        "token_id": new.token.id,
        "recipient": new.recipient,
        "amount": new.amount,
        "priority": plan.priority.value,
        "state": State.RECEIVED.value,
        "state_reason": reason,
        "state_message": message,
        "tx_hash": None,
        "fee_wei": None,
        "confirmations": 0,
        "user_ref": new.user_ref,
        "limit_bucket": plan.limit_bucket,
        "trace_context": new.trace_context,
    }


def new_row(
    index: int, partner_id: str, new: NewWithdrawal, plan: _Plan, now: dt.datetime
) -> _NewRow:
    withdrawal_id = new_ulid()
    reason, message = received_audit(new, plan)
    audit, moved = creation_audit(
        withdrawal_id=withdrawal_id,
        partner_id=partner_id,
        state=State.RECEIVED.value,
        reason=reason,
        message=message,
        occur_time=now,
        actor=ACTOR_PARTNER + partner_id,
        trace_context=new.trace_context,
    )
    row = CreatedWithdrawal(
        id=withdrawal_id,
        partner_id=partner_id,
        **_received_columns(new, plan),
        version=1,
        audit_head=audit["hash"],
        create_time=now,
        update_time=now,
        end_time=None,
    )
    return _NewRow(index, row, audit, moved, plan.limits)


def _key_reused(request_id: str, existing_id: str) -> ApiError:
    return IDEMPOTENCY_KEY_REUSED.error(
        f"The idempotency key {request_id!r} was already used for a different withdrawal "
        f"({existing_id}); use a new key for a new withdrawal.",
        metadata={"withdrawal": "withdrawals/" + existing_id},
    )


def reference_reused(client_reference: str, existing_id: str) -> ApiError:
    """ALREADY_EXISTS for a new request naming a client reference another withdrawal has."""
    return CLIENT_REFERENCE_REUSED.error(
        f"The client reference {client_reference!r} is already used by withdrawal "
        f"{existing_id}; use another reference for a new withdrawal.",
        metadata={"withdrawal": "withdrawals/" + existing_id},
    )


def _repeat(stored: StoredWithdrawal, new: NewWithdrawal) -> Created | ApiError:
    """A request whose request_id is already stored: the original, or ALREADY_EXISTS."""
    if stored.request_fingerprint != new.fingerprint:
        return _key_reused(new.request_id, stored.id)
    return stored, None


class _RowsStatement:
    """A compiled one-row INSERT split where PyMySQL's own `executemany` splits it (the
    statement's head, its row of `%(name)s` parameters, and any ON DUPLICATE KEY UPDATE
    tail), so that many rows render as one multi-row statement."""

    def __init__(self, sql: str) -> None:
        match = RE_INSERT_VALUES.match(sql)
        if match is None:
            raise ValueError(f"{sql[:80]!r}: no single row of values to repeat")
        self.prefix: str = match.group(1) % ()
        self.columns: list[str] = re.findall(r"%\((\w+)\)s", match.group(2))
        self.postfix: str = (match.group(3) or "") % ()

    def render(self, rows: Iterable[Mapping[str, Any]], quoting: list[str]) -> str:
        """The statement for `rows`, each value an SQL literal (`sql_text.row_values`;
        `quoting`: the connection's, from `sql_text.quoting`)."""
        values = ",".join(row_values(row, self.columns, quoting) for row in rows)
        return self.prefix + values + self.postfix


class _DriverInserts:
    """The group commit's INSERTs on PyMySQL, straight on DBAPI connections it keeps.

    Per batch, SQLAlchemy's connection handling (pool check-out with a ping, Connection and
    Transaction objects, a rollback when the connection goes back) and its per-row parameter
    handling cost about as much CPU as the driver's own work: measured on the 2-core
    benchmark machine, 0.72 ms against 0.46 ms for a batch of one, 1.59 ms against 0.86 ms
    for ten. Here a batch is two INSERTs (each one multi-row statement) and a COMMIT on a
    connection held between batches; a batch a 24-hour limit counts adds the lock rows'
    statement and the usage read before them and the counters' statement after them
    (`insert_counted`), each also one statement for the whole batch.

    Round trips: on connections that allow several statements per query (`multi_statements`:
    the gateway's own engine for this, `make_engine(..., multi_statements=True)`, used by
    nothing else) the statements that need no answer in between go together: a batch is one
    round trip (INSERTs and COMMIT). A batch a 24-hour limit counts is one round trip too on
    MariaDB while its scopes are far from their limits: the lock rows, `far_from_limits`'s
    read of the usage (after the lock) and the guard that SIGNALs when it found a limit
    near, the INSERTs, the counters and COMMIT. Otherwise, or when the guard signals (then after a
    rollback), it is two: the lock rows and the usage read, which the server runs in that
    order, so the read sees what committed before the lock was granted; then the INSERTs,
    the counters and COMMIT. Each round trip is a wake-up of the
    server's thread and of ours, and on a machine whose cores are busy each waits its turn:
    under the API benchmark (600/s with the processor, on 2 cores) MariaDB's threads waited
    1.0-1.6 ms for a core per wake-up (their schedstat). The rows' values are SQL literals
    rendered by `sql_text` (strings quoted for the connection's mode), the usage read's
    parameters escaped by the driver. Should a statement fail, the server runs none after it
    (no COMMIT): the transaction is rolled back. Elsewhere each statement is its own round
    trip.

    A connection that fails is invalidated. A batch that found its connection dead (the
    server restarted, or closed it while idle) drops every held connection and is tried once
    more on a new one; should the lost reply have been the COMMIT's after the server applied
    it, that second try meets its own rows as duplicates, which `create_many` settles as
    repeats: the responses are right, and the processor's sweeper enqueues those rows.
    """

    def __init__(self, engine: Engine, *, multi_statements: bool = False) -> None:
        self._engine = engine
        self._multi = multi_statements
        self._dbapi: Any = engine.dialect.loaded_dbapi
        self._idle: deque[PoolProxiedConnection] = deque()  # append and pop are atomic
        self._withdrawals = _RowsStatement(
            str(insert(Withdrawal).compile(engine, column_keys=list(_CREATED_COLUMNS)))
        )
        self._audits = _RowsStatement(
            str(insert(WithdrawalAudit).compile(engine, column_keys=list(_AUDIT_COLUMNS)))
        )
        lock, counters = counter_statements()
        self._lock = _RowsStatement(str(lock.compile(engine, column_keys=list(LIMIT_COLUMNS))))
        self._counters = _RowsStatement(
            str(counters.compile(engine, column_keys=list(LIMIT_COLUMNS)))
        )

    def _send(self, cursor: Any, statements: Sequence[str]) -> list[Any]:
        """Run `statements` in order (one round trip on a multi-statement connection) and
        return the rows of the last."""
        if self._multi:
            cursor.execute(";".join(statements))
            while cursor.nextset():  # each result read in turn; an error raises here
                pass
        else:
            for statement in statements:
                cursor.execute(statement)
        return list(cursor.fetchall())

    def _row_statements(self, quoting: list[str], rows: Sequence[_NewRow]) -> list[str]:
        return [
            self._withdrawals.render((r.row.columns() for r in rows), quoting),
            self._audits.render((r.audit for r in rows), quoting),
        ]

    def insert(self, rows: Sequence[_NewRow]) -> None:
        """Both INSERTs and the COMMIT; on failure the transaction is rolled back."""

        def work(cursor: Any) -> None:
            statements = self._row_statements(sql_quoting(cursor.connection), rows)
            self._send(cursor, [*statements, "COMMIT"])

        self._run(work)

    def insert_counted(
        self,
        rows: Sequence[_NewRow],
        items: Sequence[tuple[int, ItemLimits]],
        scopes: set[Scope],
        start_bucket: int,
        shard: int,
    ) -> dict[int, Refusal]:
        """`WithdrawalStore._insert_counted` on a kept connection: far from the limits on
        MariaDB, the lock rows, the guard, the INSERTs, the counters and COMMIT at once;
        else the lock rows and the usage read, then the INSERTs of the rows no limit
        refuses, the counters and COMMIT; a scope that `shard` alone cannot take is taken
        whole after a rollback."""

        def finish(quoting: list[str], accepted: Sequence[_NewRow]) -> list[str]:
            """The accepted rows' INSERTs, their counters and COMMIT."""
            statements = self._row_statements(quoting, accepted) if accepted else []
            counters = counter_rows(
                [
                    (r.limits, r.row.limit_bucket)
                    for r in accepted
                    if r.limits is not None and r.row.limit_bucket is not None
                ],
                shard,
            )
            if counters:
                statements.append(self._counters.render(counters, quoting))
            return [*statements, "COMMIT"]

        def work(cursor: Any) -> dict[int, Refusal]:
            quoting = sql_quoting(cursor.connection)
            far = far_from_limits(items, start_bucket) if self._guarded() else None
            if far is not None:  # one round trip, unless a limit is near
                locked = self._lock.render(lock_rows(scopes, shard, ()), quoting)
                accepted = [r for r in rows if r.index not in far.refused]
                read = cursor.mogrify(far.read, far.params)
                try:
                    self._send(cursor, [locked, read, GUARD, *finish(quoting, accepted)])
                    return far.refused
                except self._dbapi.Error as exc:
                    if not near_limit(exc):
                        raise
                    cursor.connection.rollback()  # nothing written; decided below
            whole: set[Scope] = set()
            while True:
                read, params = usage_sql(scopes, start_bucket)
                locked = self._lock.render(lock_rows(scopes, shard, whole), quoting)
                usage = usage_from(
                    self._send(cursor, [locked, cursor.mogrify(read, params)]), scopes
                )
                refused = decide(items, usage)
                short = short_scopes(items, refused, usage) - whole
                if not short:
                    break
                whole |= short
                cursor.connection.rollback()  # nothing written; its locks go back
            accepted = [r for r in rows if r.index not in refused]
            self._send(cursor, finish(quoting, accepted))
            return refused

        return self._run(work)

    def _guarded(self) -> bool:
        """Whether a counted batch may try `far_from_limits`'s one round trip: its guard is a
        MariaDB compound statement, sent with the rest on a multi-statement connection."""
        return self._multi and bool(getattr(self._engine.dialect, "is_mariadb", False))

    def _run(self, work: Callable[[Any], T]) -> T:
        """`work` (which ends with COMMIT) on a cursor of a kept connection; on failure the
        transaction is rolled back (once more on a new connection when the first was found
        dead)."""
        for attempt in range(2):
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    result = work(cursor)
                finally:
                    cursor.close()
            except self._dbapi.Error as exc:
                dead = self._engine.dialect.is_disconnect(exc, connection, None)
                if dead:  # the others most likely died with it (a restart): all are dropped
                    self._discard(connection)
                    self.close(discard=True)
                    if attempt == 0:
                        continue  # on a fresh connection, pinged by the pool's check-out
                elif self._rolled_back(connection):
                    self._idle.append(connection)
                else:
                    self._discard(connection)
                raise
            except BaseException:
                self._discard(connection)
                raise
            self._idle.append(connection)
            return result
        raise AssertionError("unreachable")

    @staticmethod
    def _rolled_back(connection: PoolProxiedConnection) -> bool:
        try:
            connection.rollback()
        except Exception:
            return False
        return True

    @staticmethod
    def _discard(connection: PoolProxiedConnection) -> None:
        connection.invalidate()
        connection.close()

    def close(self, *, discard: bool = False) -> None:
        """Give the held connections back to the pool (invalidated, when `discard`)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            if discard:
                self._discard(connection)
            else:
                connection.close()


def _collided(exc: BaseException, dbapi: Any) -> bool:
    """The batch collided with another writer: a duplicate key, or an InnoDB deadlock
    between concurrent inserts of the same key. (`exc` is a DBAPI error of the driver
    path, or SQLAlchemy's wrapping of one.)"""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(exc, IntegrityError) or isinstance(orig, dbapi.IntegrityError):
        return True
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] == MYSQL_DEADLOCK


class WithdrawalStore:
    def __init__(
        self,
        engine: Engine,
        *,
        limits_cache_seconds: float = 5.0,
        first_shard: int = 0,
        commit_engine: Engine | None = None,
    ) -> None:
        """`first_shard`: where this process's pool of limit shards starts (`ShardPool`).
        `commit_engine`: an engine of the same database whose connections allow several
        statements per query (`make_engine(..., multi_statements=True)`), for the group
        commit alone (`_DriverInserts`); without it the group commit uses `engine`, one
        statement per round trip."""
        self.engine = engine
        self.shards = ShardPool(first_shard)
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        self.reference = ReferenceCache(self.sessions)
        self.limits = LimitPolicyCache(self.sessions, limits_cache_seconds)
        # On PyMySQL the group commit writes through the driver (`_DriverInserts`): its column
        # types need no processing there (ints, strings, naive datetimes, None). SQLite keeps
        # SQLAlchemy's, which stores amounts and datetimes in its own text formats.
        self._driver_inserts: _DriverInserts | None = None
        if engine.dialect.driver == "pymysql":
            self._driver_inserts = (
                _DriverInserts(engine)
                if commit_engine is None
                else _DriverInserts(commit_engine, multi_statements=True)
            )

    def close(self) -> None:
        """Give back the connections the group commit holds (before disposing the engine)."""
        if self._driver_inserts is not None:
            self._driver_inserts.close()

    def verify_token(self, token: str) -> api_keys.VerifiedKey | None:
        with self.sessions() as session:
            return api_keys.verify_token(session, token)

    def record_key_use(self, prefixes: Collection[str], when: dt.datetime) -> None:
        with self.sessions.begin() as session:
            api_keys.record_key_use(session, prefixes, when)

    def prune_limit_usage(self) -> int:
        """Delete the limit counters older than any window (`svc_gateway.limits`)."""
        with self.engine.begin() as connection:
            return prune_usage(connection, utcnow())

    def _plans(
        self,
        items: Sequence[tuple[str, NewWithdrawal]],
        now: dt.datetime,
        policy: LimitPolicy | None = None,
        connection: Connection | None = None,
    ) -> list[_Plan]:
        """Each request's priority and limits: its user's tier (one SELECT for the batch's
        users, when any request names one, on `connection` if given) and `policy` (default:
        the cached one)."""
        if policy is None:
            policy = self.limits.get()
        users = {(partner_id, new.user_ref) for partner_id, new in items if new.user_ref}
        assigned: dict[tuple[str, str], str] = {}
        if users and connection is not None:
            assigned = assigned_tiers(connection, users)
        elif users:
            with self.engine.connect() as own:
                assigned = assigned_tiers(own, users)
        bucket = bucket_of(now)
        any_limit = policy.any_limit  # once: a batch plans thousands of rows at a time
        plans: list[_Plan] = []
        for partner_id, new in items:
            tier = ""
            if new.user_ref:
                tier = assigned.get((partner_id, new.user_ref)) or policy.default_tier(partner_id)
            priority = new.priority or policy.default_priority(tier)
            limits = None
            if any_limit:
                limits = item_limits(
                    policy, partner_id, new.user_ref, new.token.id, new.amount, tier
                )
            counted = limits is not None and limits.counted
            plans.append(_Plan(priority, limits, bucket if counted else None))
        return plans

    def plan_items(
        self,
        items: Sequence[tuple[str, NewWithdrawal]],
        now: dt.datetime,
        policy: LimitPolicy,
        connection: Connection | None = None,
    ) -> list[_Plan]:
        """Each request's priority and limits under `policy`, as a create would plan it (a
        batch's rows; the tiers read on `connection` when given: on SQLite, the batch's own
        transaction, as any other would wait for it)."""
        return self._plans(items, now, policy, connection)

    def create(self, partner_id: str, new: NewWithdrawal) -> tuple[Withdrawal, Moved | None]:
        """Insert the withdrawal (RECEIVED, audited); on a repeated request_id return the
        original and None. Raises ALREADY_EXISTS when the repeat's body differs, and
        FAILED_PRECONDITION `LIMIT_EXCEEDED` when a limit refuses it."""
        now = utcnow()
        (plan,) = self._plans([(partner_id, new)], now)
        if plan.limited:  # the group commit's path, for one row
            outcomes: dict[int, Created | Exception] = {}
            self._insert_settling(
                [new_row(0, partner_id, new, plan, now)], [(partner_id, new)], outcomes
            )
            outcome = outcomes[0]
            if isinstance(outcome, Exception):
                raise outcome
            stored, moved = outcome
            if isinstance(stored, CreatedWithdrawal):
                return self._read(partner_id, stored.id), moved
            return stored, moved
        row = Withdrawal(
            id=new_ulid(),
            partner_id=partner_id,
            **_received_columns(new, plan),
            create_time=now,
            update_time=now,
            end_time=None,
        )
        try:
            with self.sessions.begin() as session:
                moved = record_creation(session, row, actor=ACTOR_PARTNER + partner_id)
            return row, moved
        except IntegrityError:
            pass
        with self.sessions() as session:
            existing = session.scalar(
                select(Withdrawal).where(
                    Withdrawal.partner_id == partner_id,
                    Withdrawal.request_id == new.request_id,
                )
            )
        if existing is None:  # the conflict was not the idempotency key: the reference?
            holder = self.existing_references([(partner_id, new.client_reference)])
            found = holder.get((partner_id, new.client_reference))
            if found is not None:
                raise reference_reused(new.client_reference, found)
            raise RuntimeError("insert failed on a constraint other than the idempotency key")
        if existing.request_fingerprint != new.fingerprint:
            raise _key_reused(new.request_id, existing.id)
        return existing, None

    def _read(self, partner_id: str, withdrawal_id: str) -> Withdrawal:
        row = self.get(partner_id, withdrawal_id)
        if row is None:
            raise RuntimeError(f"withdrawal {withdrawal_id} vanished after its insert")
        return row

    def create_many(self, items: Sequence[tuple[str, NewWithdrawal]]) -> list[Created | Exception]:
        """Group commit of (partner_id, new) items: all new withdrawals and their audit rows
        in one transaction, with the outcome `create` would give each item on its own (the
        stored row and its Moved; the original and None for a repeated request_id; the
        ALREADY_EXISTS error when the repeat's body differs; or FAILED_PRECONDITION
        `LIMIT_EXCEEDED`, with nothing stored for it, when a limit refuses it).

        Repeats inside the batch are settled against the first item with that key. When the
        batch collides with rows committed meanwhile (a duplicate key, or a deadlock between
        concurrent inserts of one key), the keys that now exist are read and settled as
        repeats and the rest is inserted again; after `BATCH_ATTEMPTS` collisions each item
        goes through `create` alone, so one bad item never fails the others. Limits are
        checked and counted in the same transaction (`svc_gateway.limits`).
        """
        now = utcnow()
        plans = self._plans(items, now)
        first: dict[tuple[str, str], int] = {}  # key -> index of its first item
        repeats: list[tuple[int, int]] = []  # (index, index of the first item with its key)
        references: set[tuple[str, str]] = set()  # (partner, client reference) in this batch
        alone: list[int] = []  # another request with a reference already in the batch
        rows: list[_NewRow] = []
        for index, (partner_id, new) in enumerate(items):
            earlier = first.setdefault((partner_id, new.request_id), index)
            if earlier != index:
                repeats.append((index, earlier))
            elif new.client_reference and (partner_id, new.client_reference) in references:
                alone.append(index)  # after the batch, on its own: it settles who has it
            else:
                if new.client_reference:
                    references.add((partner_id, new.client_reference))
                rows.append(new_row(index, partner_id, new, plans[index], now))
        outcomes: dict[int, Created | Exception] = {}
        stored = self._insert_settling(rows, items, outcomes)
        for index in alone:
            outcomes[index] = self._create_alone(*items[index])
        for index, earlier in repeats:
            original = stored.get(earlier)
            outcomes[index] = (
                self._create_alone(*items[index])  # its first item failed: on its own
                if original is None
                else _repeat(original, items[index][1])
            )
        return [outcomes[index] for index in range(len(items))]

    def _insert_settling(
        self,
        rows: Sequence[_NewRow],
        items: Sequence[tuple[str, NewWithdrawal]],
        outcomes: dict[int, Created | Exception],
    ) -> dict[int, StoredWithdrawal]:
        """Insert the rows in one transaction, settling each row's outcome; returns the
        stored withdrawal (new or the original) by item index."""
        stored: dict[int, StoredWithdrawal] = {}
        pending = list(rows)
        refused: dict[int, Refusal] = {}
        for _ in range(BATCH_ATTEMPTS):
            if not pending:
                break
            try:
                refused = self._insert(pending)
            except Exception as exc:
                if not _collided(exc, self.engine.dialect.loaded_dbapi):
                    raise
                self._settle_existing(pending, items, stored, outcomes)
                pending = [r for r in pending if r.index not in outcomes]
                continue
            for r in pending:
                if r.index not in refused:
                    stored[r.index] = r.row
                    outcomes[r.index] = (r.row, r.moved)
            pending = [r for r in pending if r.index in refused]
            break
        if refused:  # a repeat of a stored request is answered as such, not refused
            self._settle_existing(pending, items, stored, outcomes)
            for r in pending:
                if r.index not in outcomes:
                    _, new = items[r.index]
                    refusal = refused[r.index]
                    LIMIT_REFUSALS.add(1, {"limit": refusal.limit})
                    outcomes[r.index] = limit_exceeded(refusal, new.token, new.user_ref)
            return stored
        for r in pending:  # collided every time: each on its own, settling for itself
            outcomes[r.index] = (
                self._create_alone(*items[r.index])
                if len(rows) > 1
                else RuntimeError("the insert kept colliding with concurrent writers")
            )
        return stored

    def _settle_existing(
        self,
        rows: Sequence[_NewRow],
        items: Sequence[tuple[str, NewWithdrawal]],
        stored: dict[int, StoredWithdrawal],
        outcomes: dict[int, Created | Exception],
    ) -> None:
        """Settle as repeats the rows whose key is stored already, and as
        CLIENT_REFERENCE_REUSED the others whose client reference another withdrawal has."""
        existing = self._existing([(r.row.partner_id, r.row.request_id) for r in rows])
        for r in rows:
            found = existing.get((r.row.partner_id, r.row.request_id))
            if found is not None:
                stored[r.index] = found
                outcomes[r.index] = _repeat(found, items[r.index][1])
        rest = [r for r in rows if r.index not in outcomes and r.row.client_reference]
        if rest:
            holders = self.existing_references(
                [(r.row.partner_id, r.row.client_reference) for r in rest]
            )
            for r in rest:
                holder = holders.get((r.row.partner_id, r.row.client_reference))
                if holder is not None:
                    outcomes[r.index] = reference_reused(r.row.client_reference, holder)

    def existing_references(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(partner_id, client_reference) -> the id of the withdrawal holding it, for the
        non-empty references among `keys` that are stored."""
        by_partner: dict[str, set[str]] = {}
        for partner_id, reference in keys:
            if reference:
                by_partner.setdefault(partner_id, set()).add(reference)
        if not by_partner:
            return {}
        condition = or_(
            *(
                and_(
                    Withdrawal.partner_id == partner_id,
                    Withdrawal.client_reference_key.in_(sorted(refs)),
                )
                for partner_id, refs in by_partner.items()
            )
        )
        query = select(Withdrawal.partner_id, Withdrawal.client_reference, Withdrawal.id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.where(condition)).all()
        return {(p, r): i for p, r, i in rows}

    def _create_alone(self, partner_id: str, new: NewWithdrawal) -> Created | Exception:
        try:
            return self.create(partner_id, new)
        except Exception as exc:  # becomes this request's error, not the whole batch's
            return exc

    def _insert(self, rows: Sequence[_NewRow]) -> dict[int, Refusal]:
        """The rows a limit does not refuse, and their audit rows, in one transaction
        (multi-row INSERTs, no ORM); returns the refusals by item index."""
        limited = [r for r in rows if r.limits is not None]
        counted = [r for r in limited if r.limits is not None and r.limits.counted]
        if counted:
            return self._insert_counted(rows, counted)
        refused = decide([(r.index, r.limits) for r in limited if r.limits is not None], {})
        accepted = [r for r in rows if r.index not in refused]
        if not accepted:
            return refused
        if self._driver_inserts is not None:
            self._driver_inserts.insert(accepted)
            return refused
        with self.engine.begin() as conn:
            conn.execute(insert(Withdrawal), [r.row.columns() for r in accepted])
            conn.execute(insert(WithdrawalAudit), [r.audit for r in accepted])
        return refused

    def _insert_counted(
        self, rows: Sequence[_NewRow], counted: Sequence[_NewRow]
    ) -> dict[int, Refusal]:
        """Lock the counted scopes (one shard of each), read their usage, decide, then insert
        the accepted rows and add them to the counters: one transaction. A scope where that
        shard alone cannot accept them is taken whole (every shard) in a new transaction,
        where the plain check decides (see `svc_gateway.limits`)."""
        scopes = {scope for r in counted if r.limits is not None for scope in r.limits.scopes()}
        start = window_start(rows[0].row.create_time)
        items = [(r.index, r.limits) for r in rows if r.limits is not None]
        if self._driver_inserts is not None:
            with self.shards.shard() as shard:
                return self._driver_inserts.insert_counted(rows, items, scopes, start, shard)
        whole: set[Scope] = set()
        with self.shards.shard() as shard, self.engine.connect() as conn:
            while True:
                with conn.begin() as transaction:
                    lock_scopes(conn, scopes, shard, whole)
                    usage = read_usage(conn, scopes, start)
                    refused = decide(items, usage)
                    short: set[Scope] = set()
                    if conn.dialect.name != "sqlite":  # there no other writer is in flight
                        short = short_scopes(items, refused, usage) - whole
                    if short:
                        whole |= short
                        transaction.rollback()  # nothing written; its locks go back
                        continue
                    accepted = [r for r in rows if r.index not in refused]
                    if accepted:
                        conn.execute(insert(Withdrawal), [r.row.columns() for r in accepted])
                        conn.execute(insert(WithdrawalAudit), [r.audit for r in accepted])
                        add_usage(
                            conn,
                            [
                                (r.limits, r.row.limit_bucket)
                                for r in accepted
                                if r.limits is not None and r.row.limit_bucket is not None
                            ],
                            shard,
                        )
                return refused

    def _existing(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Withdrawal]:
        """The stored withdrawals with these (partner_id, request_id) keys."""
        by_partner: dict[str, list[str]] = {}
        for partner_id, request_id in keys:
            by_partner.setdefault(partner_id, []).append(request_id)
        condition = or_(
            *(
                and_(Withdrawal.partner_id == partner_id, Withdrawal.request_id.in_(request_ids))
                for partner_id, request_ids in by_partner.items()
            )
        )
        with self.sessions() as session:
            rows = session.scalars(select(Withdrawal).where(condition)).all()
        return {(row.partner_id, row.request_id or ""): row for row in rows}

    def get(self, partner_id: str, withdrawal_id: str) -> Withdrawal | None:
        with self.sessions() as session:
            return session.scalar(
                select(Withdrawal).where(
                    Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                )
            )

    def list(
        self,
        partner_id: str,
        *,
        selection: ListFilter,
        reference: ReferenceData,
        after_id: str | None,
        limit: int,
    ) -> Sequence[Withdrawal]:
        """A page of the partner's withdrawals that `selection` selects, newest first."""
        dialect = self.engine.dialect.name
        query = select(Withdrawal).where(
            Withdrawal.partner_id == partner_id,
            *filter_conditions(selection, reference, dialect),
        )
        if after_id is not None:
            query = query.where(Withdrawal.id < after_id)
        query = query.order_by(Withdrawal.id.desc()).limit(limit)
        with self.sessions() as session:
            return session.scalars(query).all()

    def block_numbers(self, payout_tx_ids: Iterable[str]) -> dict[str, int]:
        """The block of each mined payout transaction among `payout_tx_ids` (others absent)."""
        ids = sorted(set(payout_tx_ids))
        if not ids:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(PayoutTransaction.id, PayoutTransaction.block_number).where(
                    PayoutTransaction.id.in_(ids), PayoutTransaction.block_number.is_not(None)
                )
            ).all()
        return {str(tx_id): int(block) for tx_id, block in rows if block is not None}

    def state_changes(
        self, partner_id: str, withdrawal_id: str, after_version: int, limit: int
    ) -> Sequence[WithdrawalAudit] | None:
        """Up to `limit` audit rows of the partner's withdrawal with a version above
        `after_version`, oldest first; None when the partner has no such withdrawal."""
        with self.sessions() as session:
            found = session.scalar(
                select(Withdrawal.id).where(
                    Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                )
            )
            if found is None:
                return None
            return session.scalars(
                select(WithdrawalAudit)
                .where(
                    WithdrawalAudit.withdrawal_id == withdrawal_id,
                    WithdrawalAudit.version > after_version,
                )
                .order_by(WithdrawalAudit.version)
                .limit(limit)
            ).all()

    def cancel(
        self, partner_id: str, withdrawal_id: str, reason: str
    ) -> tuple[Withdrawal | None, Moved | None]:
        """Cancel if still cancellable; (None, None) when not found; the unchanged row and
        None when already cancelled. Raises FAILED_PRECONDITION once signing started."""
        for _ in range(5):
            with self.sessions.begin() as session:
                row = session.scalar(
                    select(Withdrawal).where(
                        Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                    )
                )
                if row is None:
                    return None, None
                if row.state == State.CANCELLED:
                    return row, None
                # Not once it was placed in a payout: a transaction carrying its payout number
                # may still be mined, so it could be paid after a cancel.
                placed = row.payout_tx_id is not None or row.payout_number is not None
                if State(row.state) not in CANCELLABLE or placed:
                    raise WITHDRAWAL_NOT_CANCELLABLE.error(
                        f"The withdrawal is {row.state} and can no longer be cancelled: "
                        "only a withdrawal not yet placed in a payout transaction can be.",
                        metadata={"state": row.state},
                    )
                try:
                    moved = move(
                        session,
                        row,
                        State.CANCELLED,
                        actor=ACTOR_PARTNER + partner_id,
                        reason="CANCELLED_BY_PARTNER",
                        message=reason or "Cancelled by the partner.",
                        # Not once the processor has placed it in a payout meanwhile.
                        where=[
                            Withdrawal.payout_tx_id.is_(None),
                            Withdrawal.payout_number.is_(None),
                        ],
                    )
                except TransitionConflict:
                    continue  # it moved under us: read it again and decide again
                return row, moved
        raise CONCURRENT_MODIFICATION.error(
            "The withdrawal kept changing while cancelling; retry the request.",
        )

    def events_after(
        self, partner_id: str, withdrawal_id: str, version: int
    ) -> tuple[Withdrawal | None, Sequence[WithdrawalAudit]]:
        """The current row and its audit rows with a version above `version`, in order: each
        audit row alone is its version's event, the row adds the fields that never change."""
        with self.sessions() as session:
            row = session.scalar(
                select(Withdrawal).where(
                    Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                )
            )
            if row is None:
                return None, ()
            audits = session.scalars(
                select(WithdrawalAudit)
                .where(
                    WithdrawalAudit.withdrawal_id == withdrawal_id,
                    WithdrawalAudit.version > version,
                )
                .order_by(WithdrawalAudit.version)
            ).all()
            return row, audits
