"""Every state change is a compare-and-set on (id, state, version), written together with its
audit row in the caller's transaction. Nothing else updates `withdrawals.state`.

`move` moves one withdrawal. `move_many` moves many in the same transaction with the same
guarantees but a constant number of statements (one SELECT ... FOR UPDATE of the audit
snapshots' columns, one UPDATE per distinct source state and one multi-row INSERT of the
audit rows), which is what lets a payout of hundreds of withdrawals, or a consumer batch,
cost a few round trips instead of hundreds: see its docstring.

Every audit row records the withdrawal's transaction hash, fee and confirmations as they are
right after the change (`audit.Snapshot`, covered by the row's hash), so that watchers can be
shown each version as it was. Those columns also change without a state change (the monitor
counts confirmations, a replacement at the same nonce changes the hash), so neither the row
as the caller read it nor the fields it sets are enough: `move` and `move_many` read them
with `SELECT ... FOR UPDATE` just before their UPDATE (one statement more per call, by
primary key; the lock is the one the UPDATE takes anyway) and lay the new values over them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    String,
    Table,
    bindparam,
    event,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import set_committed_value

from withdrawal_shared import tracing
from withdrawal_shared.db.audit import (
    GENESIS,
    NEW_SNAPSHOT,
    NEW_SNAPSHOT_TEXT,
    SNAPSHOT_FIELDS,
    Snapshot,
    audit_hash,
    occur_time_text,
)
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.sql_text import insert_rows
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.metrics import WITHDRAWAL_HOLDS, WITHDRAWAL_TRANSITIONS
from withdrawal_shared.states import TERMINAL, State, can_move

_ID = String(26)
# The tables themselves, for the bulk statements: Core, without the ORM's per-statement work.
WITHDRAWALS = cast(Table, Withdrawal.__table__)
AUDITS = cast(Table, WithdrawalAudit.__table__)


class TransitionConflict(WithdrawalSystemError):
    """The withdrawal was not in the expected state/version: someone else moved it first."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Moved:
    """What a successful transition did, for publishing the event after commit."""

    withdrawal_id: str
    partner_id: str
    from_state: State | None  # None for the creation of the withdrawal
    to_state: State
    version: int
    reason: str
    reorged: bool
    occur_time: dt.datetime
    trace_context: str | None = None
    """The withdrawal's stored W3C `traceparent` (`withdrawal_shared.tracing`)."""


def creation_audit(
    *,
    withdrawal_id: str,
    partner_id: str,
    state: str,
    reason: str,
    message: str,
    occur_time: dt.datetime,
    actor: str,
    snapshot: Snapshot = NEW_SNAPSHOT,
    trace_context: str | None = None,
) -> tuple[dict[str, Any], Moved]:
    """The first audit row of a new withdrawal (version 1, from nothing to `state`) as column
    values, and the Moved it records. The withdrawal row gets `version` 1 and `audit_head` the
    audit row's `hash`; `snapshot` is its transaction hash, fee and confirmations (none, for a
    new withdrawal). For writers that insert many rows at once without ORM objects (the
    gateway's group commit); `record_creation` is the same for one ORM row."""
    recorded = NEW_SNAPSHOT_TEXT if snapshot == NEW_SNAPSHOT else snapshot.encode()
    digest = audit_hash(
        prev_hash=GENESIS,
        withdrawal_id=withdrawal_id,
        version=1,
        from_state="",
        to_state=state,
        actor=actor,
        reason=reason,
        message=message,
        reorged=False,
        occur_time=occur_time,
        snapshot=recorded,
    )
    audit = {
        "withdrawal_id": withdrawal_id,
        "version": 1,
        "from_state": "",
        "to_state": state,
        "actor": actor,
        "reason": reason,
        "message": message,
        "reorged": False,
        "occur_time": occur_time,
        "prev_hash": GENESIS,
        "hash": digest,
        "snapshot": recorded,
    }
    moved = Moved(
        withdrawal_id, partner_id, None, State(state), 1, reason, False, occur_time, trace_context
    )
    return audit, moved


def record_creation(session: Session, row: Withdrawal, *, actor: str) -> Moved:
    """Fill a new row's audit fields and add its first audit row (RECEIVED)."""
    audit, moved = creation_audit(
        withdrawal_id=row.id,
        partner_id=row.partner_id,
        state=row.state,
        reason=row.state_reason,
        message=row.state_message,
        occur_time=row.create_time,
        actor=actor,
        snapshot=Snapshot(row.tx_hash, row.fee_wei, row.confirmations or 0),
        trace_context=row.trace_context,
    )
    row.version = 1
    row.audit_head = audit["hash"]
    session.add(row)
    session.add(WithdrawalAudit(**audit))
    return moved


def move(
    session: Session,
    row: Withdrawal,
    to_state: State,
    *,
    actor: str,
    reason: str = "",
    message: str = "",
    reorged: bool = False,
    where: Sequence[ColumnElement[bool]] = (),
    **fields: Any,
) -> Moved:
    """Compare-and-set `row` (as read in `session`) to `to_state`, with an audit row.

    Raises TransitionConflict when the stored row moved since it was read (or a `where`
    condition no longer holds), ValueError when the lifecycle forbids the move. `fields` are
    extra columns to set in the same UPDATE (plain values for the snapshot's columns).
    """
    from_state = State(row.state)
    if not can_move(from_state, to_state):
        raise ValueError(f"withdrawal {row.id}: {from_state} -> {to_state} is not allowed")
    stored = _snapshots_for_update(session, [row.id]).get(row.id)
    if stored is None:
        raise TransitionConflict(f"withdrawal {row.id} no longer exists")
    snapshot = _with_fields(stored, fields).encode()
    now = utcnow()
    version = row.version + 1
    digest = audit_hash(
        prev_hash=row.audit_head,
        withdrawal_id=row.id,
        version=version,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        message=message,
        reorged=reorged,
        occur_time=now,
        snapshot=snapshot,
    )
    values: dict[str, Any] = {
        "state": to_state.value,
        "state_reason": reason,
        "state_message": message[:512],
        "version": version,
        "audit_head": digest,
        "update_time": now,
        **fields,
    }
    if to_state in TERMINAL:
        values["end_time"] = now
    result = session.execute(
        update(Withdrawal)
        .where(
            Withdrawal.id == row.id,
            Withdrawal.state == from_state.value,
            Withdrawal.version == row.version,
            *where,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise TransitionConflict(f"withdrawal {row.id} moved since it was read")
    session.add(
        WithdrawalAudit(
            withdrawal_id=row.id,
            version=version,
            from_state=from_state.value,
            to_state=to_state.value,
            actor=actor,
            reason=reason,
            message=message[:512],
            reorged=reorged,
            occur_time=now,
            prev_hash=row.audit_head,
            hash=digest,
            snapshot=snapshot,
        )
    )
    _written(row, values)
    moved = Moved(
        row.id,
        row.partner_id,
        from_state,
        to_state,
        version,
        reason,
        reorged,
        now,
        row.trace_context,
    )
    count_moves([moved], actor)
    _trace_when_committed(session, [moved], actor)
    return moved


@dataclass(frozen=True, slots=True)
class RowAsRead:
    """What `move_many` needs of a withdrawal as read, without an ORM object (for the
    hundreds of rows of one payout: building and tracking ORM objects costs more than the
    UPDATE). Read with `rows_as_read`."""

    id: str
    partner_id: str
    state: str
    version: int
    audit_head: str
    trace_context: str | None = None


def rows_as_read(session: Session, *where: ColumnElement[bool]) -> list[RowAsRead]:
    """The withdrawals matching `where`, by id, as `RowAsRead`."""
    c = WITHDRAWALS.c
    result = session.execute(
        select(c.id, c.partner_id, c.state, c.version, c.audit_head, c.trace_context)
        .where(*where)
        .order_by(c.id)
    )
    return [RowAsRead(*row) for row in result]


@dataclass(frozen=True)
class Step:
    """One state change of a `move_many` path (the audit row's content)."""

    to_state: State
    reason: str = ""
    message: str = ""
    reorged: bool = False


def move_many(
    session: Session,
    rows: Sequence[Withdrawal | RowAsRead],
    steps: Step | Sequence[Step],
    *,
    actor: str,
    where: Sequence[ColumnElement[bool]] = (),
    fields: Mapping[str, Any] | None = None,
    row_fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Moved]:
    """Compare-and-set every row in `rows` (as read) along `steps`, with one audit row per
    withdrawal and step, all or nothing.

    The guarantees are those of `move` for each row: the UPDATE matches a row only at the
    (id, state, version) it was read at (and `where`), the lifecycle is checked for each
    step, and each audit row's hash covers its predecessor's, so the trail of every
    withdrawal stays one unbroken chain. Several steps (e.g. RECEIVED -> VALIDATED ->
    QUEUED) write one audit row each and the row itself once, at the last step; nobody can
    observe the intermediate state, since it all commits together.

    What differs is the cost: one SELECT ... FOR UPDATE (the snapshots' columns), one UPDATE
    per distinct source state (the per-row values, the new version and audit head, go in CASE
    expressions) and one multi-row INSERT of the audit rows, instead of three statements per
    row and step. When fewer rows matched than were
    given (someone else moved one of them first: a cancel, another processor), it raises
    `TransitionConflict` without saying which; the caller must roll the transaction back
    and fall back to moving rows one by one with `move`, which tells them apart. A
    concurrent cancel therefore wins or loses cleanly, exactly as with `move`.

    `fields` are extra columns set on every row; `row_fields[id]` extra columns of one row
    (plain values for the snapshot's columns). Each audit row's snapshot is the row as stored
    (read with one `SELECT ... FOR UPDATE` of all the rows) with these columns laid over it at
    the last step; the steps before show it as stored.
    Returns the `Moved`s in order: for each row, one per step. ORM rows show the new values
    afterwards (as loaded, not as changes); `RowAsRead`s are left as they were read.
    """
    path = [steps] if isinstance(steps, Step) else list(steps)
    if not rows:
        return []
    if not path:
        raise ValueError("move_many needs at least one step")
    now = utcnow()
    common = dict(fields or {})
    per_row = row_fields or {}
    audits: list[dict[str, Any]] = []
    moved: list[Moved] = []
    heads: dict[str, str] = {}
    by_source: dict[State, list[Withdrawal | RowAsRead]] = defaultdict(list)
    snapshots = _before_and_after(session, rows, common, per_row)
    occur_text = occur_time_text(now)  # every audit row of the move has this time
    for row in rows:
        by_source[State(row.state)].append(row)
        heads[row.id] = _chain(
            row, path, actor, (now, occur_text), audits, moved, snapshots[row.id]
        )
    last = path[-1]
    hops = len(path)
    values: dict[str, Any] = {
        "state": last.to_state.value,
        "state_reason": last.reason,
        "state_message": last.message[:512],
        "update_time": now,
        **common,
    }
    if last.to_state in TERMINAL:
        values["end_time"] = now
    varying = sorted({key for extra in per_row.values() for key in extra})
    table = WITHDRAWALS
    direct = not where and DirectUpdate.supported(session)
    for from_state, group in by_source.items():
        if direct:
            matched = _update_direct(
                session, from_state, group, heads, hops, values, per_row, varying
            )
            if matched != len(group):
                raise TransitionConflict(
                    f"{len(group) - matched} of {len(group)} withdrawals moved since they were read"
                )
            continue
        group_values = {**values, "version": Withdrawal.version + hops}
        group_values["audit_head"] = by_id("audit_head", {r.id: heads[r.id] for r in group})
        for key in varying:
            group_values[key] = by_id(
                key, {r.id: per_row[r.id][key] for r in group if key in per_row.get(r.id, {})}
            )
        result = session.execute(
            update(table)
            .where(
                table.c.id.in_([row.id for row in group]),
                table.c.state == from_state.value,
                versions_are({r.id: r.version for r in group}),
                *where,
            )
            .values(**group_values)
        )
        if result.rowcount != len(group):  # type: ignore[attr-defined]
            raise TransitionConflict(
                f"{len(group) - result.rowcount} of {len(group)} withdrawals moved "  # type: ignore[attr-defined]
                "since they were read"
            )
    # On PyMySQL one multi-row INSERT written here, the driver's escaping of each value spared
    insert_rows(session.connection(), AUDITS, audits)
    plain = dict(values)
    for row in rows:
        if not isinstance(row, Withdrawal):
            continue
        _written(
            row,
            {
                **plain,
                "version": row.version + hops,
                "audit_head": heads[row.id],
                **per_row.get(row.id, {}),
            },
        )
    count_moves(moved, actor)
    _trace_when_committed(session, moved, actor)
    return moved


_DRIVER_PLACEHOLDERS = {"format": "%s", "pyformat": "%s", "qmark": "?"}


class DirectUpdate:
    """One UPDATE of `withdrawals` written in the driver's own SQL (quoted identifiers and
    placeholders; every value a bound parameter, through its column's bind processor as
    SQLAlchemy would send it). For statements whose shape changes with the number of rows
    (a CASE by id per row), which SQLAlchemy would build, cache-key and compile anew every
    time at a cost above the database's. `supported` says whether the session's dialect
    takes positional placeholders; otherwise use the expression path. The placeholders are
    positional: build the assignments before the conditions, each in statement order."""

    def __init__(self, session: Session) -> None:
        self._connection = session.connection()
        self._dialect = self._connection.dialect
        self._mark = _DRIVER_PLACEHOLDERS[self._dialect.paramstyle]
        self.quote = self._dialect.identifier_preparer.quote
        self._params: list[Any] = []
        self._processors: dict[str, Any] = {}

    @staticmethod
    def supported(session: Session) -> bool:
        return session.get_bind().dialect.paramstyle in _DRIVER_PLACEHOLDERS

    def bind(self, column: str, value: Any) -> str:
        """A placeholder for `value`, typed as `column` of `withdrawals`."""
        if column not in self._processors:
            self._processors[column] = WITHDRAWALS.c[column].type.bind_processor(self._dialect)
        processor = self._processors[column]
        self._params.append(value if processor is None else processor(value))
        return self._mark

    def case(self, column: str, by_id: Mapping[str, Any], otherwise: str) -> str:
        """`CASE id WHEN ... THEN ... ELSE otherwise END` (`otherwise` is SQL text)."""
        parts = ["CASE ", self.quote("id")]
        for row_id, value in by_id.items():
            parts += [" WHEN ", self.bind("id", row_id), " THEN ", self.bind(column, value)]
        parts += [" ELSE ", otherwise, " END"]
        return "".join(parts)

    def ids(self, row_ids: Sequence[str]) -> str:
        """`id IN (...)`."""
        marks = ", ".join(self.bind("id", row_id) for row_id in row_ids)
        return f"{self.quote('id')} IN ({marks})"

    def versions_are(self, versions: Mapping[str, int]) -> str:
        """`versions_are` as driver SQL."""
        return f"{self.quote('version')} = " + self.case("version", versions, "NULL")

    def execute(self, assignments: Sequence[str], conditions: Sequence[str]) -> int:
        """Run `UPDATE withdrawals SET <assignments> WHERE <conditions>`; the rows matched."""
        sql = (
            f"UPDATE {self.quote(WITHDRAWALS.name)} SET {', '.join(assignments)}"  # noqa: S608
            f" WHERE {' AND '.join(conditions)}"
        )
        result = self._connection.exec_driver_sql(sql, tuple(self._params))
        return int(result.rowcount)


def _update_direct(
    session: Session,
    from_state: State,
    group: Sequence[Withdrawal | RowAsRead],
    heads: Mapping[str, str],
    hops: int,
    values: Mapping[str, Any],
    per_row: Mapping[str, Mapping[str, Any]],
    varying: Sequence[str],
) -> int:
    """`move_many`'s UPDATE of the rows of one source state as `DirectUpdate`: the same
    statement the expression path builds (compare-and-set on each row's id, state and
    version; CASE by id for the per-row values). The rows matched."""
    stmt = DirectUpdate(session)
    quote = stmt.quote
    assignments = [f"{quote('version')} = {quote('version')} + {int(hops)}"]
    for key, value in values.items():
        assignments.append(f"{quote(key)} = {stmt.bind(key, value)}")
    heads_by_id = {r.id: heads[r.id] for r in group}
    assignments.append(
        f"{quote('audit_head')} = {stmt.case('audit_head', heads_by_id, quote('audit_head'))}"
    )
    for key in varying:
        named = {r.id: per_row[r.id][key] for r in group if key in per_row.get(r.id, {})}
        if named:
            assignments.append(f"{quote(key)} = {stmt.case(key, named, quote(key))}")
    conditions = [
        stmt.ids([row.id for row in group]),
        f"{quote('state')} = {stmt.bind('state', from_state.value)}",
        stmt.versions_are({r.id: r.version for r in group}),
    ]
    return stmt.execute(assignments, conditions)


_TRACED_MOVES = "withdrawal_shared.traced_moves"


def _trace_when_committed(session: Session, moved: Sequence[Moved], actor: str) -> None:
    """When tracing is on, keep `moved` with the span doing the work until the session's
    transaction ends: its state change spans are recorded (`tracing.record_moves`) once it
    commits, and never when it rolls back."""
    if not tracing.enabled() or not moved:
        return
    _listen_to_sessions()
    pending = session.info.setdefault(_TRACED_MOVES, [])
    pending.append((list(moved), actor, tracing.current_span_context()))


@functools.cache
def _listen_to_sessions() -> None:
    event.listen(Session, "after_commit", _record_committed)
    event.listen(Session, "after_transaction_end", _drop_uncommitted)


def _record_committed(session: Session) -> None:
    for moved, actor, worker in session.info.pop(_TRACED_MOVES, ()):
        tracing.record_moves(moved, actor, worker)


def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit
        session.info.pop(_TRACED_MOVES, None)


def count_moves(moved: Sequence[Moved], actor: str) -> None:
    """Count state changes for the metrics (`withdrawal_shared.metrics`). Counted when written:
    the moves of a transaction that then rolls back (a lost compare-and-set) are included."""
    by_state: dict[tuple[str, str], int] = {}
    for change in moved:
        key = (change.to_state.value, change.reason if change.to_state is State.ON_HOLD else "")
        by_state[key] = by_state.get(key, 0) + 1
    for (to_state, hold_reason), count in by_state.items():
        WITHDRAWAL_TRANSITIONS.add(count, {"to_state": to_state, "actor": actor})
        if hold_reason:
            WITHDRAWAL_HOLDS.add(count, {"reason": hold_reason})


def _written(row: Withdrawal, values: Mapping[str, Any]) -> None:
    """Show on `row` what the UPDATE just stored, as loaded values: setting them as changes
    would make the session write every moved row a second time at commit."""
    for key, value in values.items():
        set_committed_value(row, key, value)


def _chain(
    row: Withdrawal | RowAsRead,
    path: Sequence[Step],
    actor: str,
    occurred: tuple[dt.datetime, str],
    audits: list[dict[str, Any]],
    moved: list[Moved],
    snapshots: tuple[Snapshot, Snapshot],
) -> str:
    """Append `row`'s audit rows and `Moved`s along `path`; the new audit head. `occurred`:
    the move's time and its `occur_time_text`. `snapshots` are the row's changing fields
    before the move and after it (the same object when the move changes none): the steps
    before the last record the first, the last step the second."""
    now, occur_text = occurred
    prev_hash, version, current = row.audit_head, row.version, State(row.state)
    after = snapshots[1].encode()
    before = after if snapshots[0] is snapshots[1] else snapshots[0].encode()
    for index, step in enumerate(path, start=1):
        if not can_move(current, step.to_state):
            raise ValueError(f"withdrawal {row.id}: {current} -> {step.to_state} is not allowed")
        version += 1
        message = step.message[:512]
        snapshot = after if index == len(path) else before
        digest = audit_hash(
            prev_hash=prev_hash,
            withdrawal_id=row.id,
            version=version,
            from_state=current,
            to_state=step.to_state,
            actor=actor,
            reason=step.reason,
            message=message,
            reorged=step.reorged,
            occur_time=now,
            snapshot=snapshot,
            occur_text=occur_text,
        )
        audits.append(
            {
                "withdrawal_id": row.id,
                "version": version,
                "from_state": current.value,
                "to_state": step.to_state.value,
                "actor": actor,
                "reason": step.reason,
                "message": message,
                "reorged": step.reorged,
                "occur_time": now,
                "prev_hash": prev_hash,
                "hash": digest,
                "snapshot": snapshot,
            }
        )
        moved.append(
            Moved(
                row.id,
                row.partner_id,
                current,
                step.to_state,
                version,
                step.reason,
                step.reorged,
                now,
                row.trace_context,
            )
        )
        prev_hash, current = digest, step.to_state
    return prev_hash


def _snapshots_for_update(session: Session, ids: Sequence[str]) -> dict[str, Snapshot]:
    """The stored transaction hash, fee and confirmations of these withdrawals, by id, read
    with `SELECT ... FOR UPDATE` (in id order, as the UPDATE that follows locks them), so
    nothing changes them between this read and the caller's commit. A plain read on SQLite,
    whose transactions here hold the database's write lock from BEGIN."""
    c = WITHDRAWALS.c
    result = session.execute(
        select(c.id, c.tx_hash, c.fee_wei, c.confirmations)
        .where(c.id.in_(ids))
        .order_by(c.id)
        .with_for_update()
    )
    return {
        row_id: Snapshot(tx_hash, fee, confirmations or 0)
        for row_id, tx_hash, fee, confirmations in result
    }


def _before_and_after(
    session: Session,
    rows: Sequence[Withdrawal | RowAsRead],
    common: Mapping[str, Any],
    per_row: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[Snapshot, Snapshot]]:
    """`move_many`'s snapshots of each row, by id: as stored (locked), and with the move's
    new values. ValueError when a row is given twice."""
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        twice = next(row_id for row_id in ids if ids.count(row_id) > 1)
        raise ValueError(f"withdrawal {twice} is given twice")
    stored = _snapshots_for_update(session, ids)
    snapshots: dict[str, tuple[Snapshot, Snapshot]] = {}
    for row_id in ids:
        before = stored.get(row_id)
        if before is None:
            raise TransitionConflict(f"withdrawal {row_id} no longer exists")
        after = _with_fields(_with_fields(before, common), per_row.get(row_id, {}))
        snapshots[row_id] = (before, after)
    return snapshots


def _with_fields(snapshot: Snapshot, fields: Mapping[str, Any]) -> Snapshot:
    """`snapshot` with the snapshot's columns among `fields` (a move's new values) laid over
    it. Those must be plain values: a SQL expression's result is not known before the UPDATE."""
    changed = {key: fields[key] for key in SNAPSHOT_FIELDS if key in fields}
    if not changed:
        return snapshot
    for key, value in changed.items():
        if isinstance(value, ClauseElement):
            raise ValueError(f"{key} must be a plain value to be recorded in the audit trail")
    return Snapshot(
        tx_hash=changed.get("tx_hash", snapshot.tx_hash),
        fee_wei=changed.get("fee_wei", snapshot.fee_wei),
        confirmations=changed.get("confirmations", snapshot.confirmations) or 0,
    )


def by_id(column: str, values: Mapping[str, Any]) -> Any:
    """`CASE id WHEN ... THEN ... ELSE <column> END` for an UPDATE of `withdrawals`: one
    value per row in one statement (`column` keeps its value for the rows not named)."""
    if not values:
        return WITHDRAWALS.c[column]
    sql, params = _case_sql(column, values, column)
    return text(sql).bindparams(*params)


def versions_are(versions: Mapping[str, int]) -> Any:
    """The compare-and-set condition of many rows at once: each row (by id) at the version
    it was read at (`version = CASE id WHEN ... END`; NULL, never true, for the others)."""
    sql, params = _case_sql("version", versions, "NULL")
    return text(f"version = {sql}").bindparams(*params)


def _case_sql(column: str, values: Mapping[str, Any], otherwise: str) -> tuple[str, list[Any]]:
    """The SQL text and bound parameters of `CASE id WHEN ... END`, each value bound with the
    column's own type (amounts are text on SQLite). Text with bound parameters, because
    building and compiling the same CASE as an expression tree costs the processor more than
    the database work it saves."""
    kind = WITHDRAWALS.c[column].type
    parts = ["CASE id"]
    params = []
    for index, (key, value) in enumerate(values.items()):
        parts.append(f" WHEN :{column}_k{index} THEN :{column}_v{index}")
        params.append(bindparam(f"{column}_k{index}", key, type_=_ID))
        params.append(bindparam(f"{column}_v{index}", value, type_=kind))
    parts.append(f" ELSE {otherwise} END")
    return "".join(parts), params


def verify_audit_chain(session: Session, withdrawal_id: str) -> bool:
    """Recompute the withdrawal's hash chain; False when any row was edited or removed."""
    rows = session.scalars(
        select(WithdrawalAudit)
        .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
        .order_by(WithdrawalAudit.version)
    ).all()
    head = session.scalar(select(Withdrawal.audit_head).where(Withdrawal.id == withdrawal_id))
    prev = GENESIS
    for expected_version, audit in enumerate(rows, start=1):
        if audit.version != expected_version or audit.prev_hash != prev:
            return False
        digest = audit_hash(
            prev_hash=prev,
            withdrawal_id=withdrawal_id,
            version=audit.version,
            from_state=audit.from_state,
            to_state=audit.to_state,
            actor=audit.actor,
            reason=audit.reason,
            message=audit.message,
            reorged=audit.reorged,
            occur_time=audit.occur_time,
            snapshot=audit.snapshot,
        )
        if digest != audit.hash:
            return False
        prev = digest
    return bool(rows) and prev == head
