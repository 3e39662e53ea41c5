"""A batch file's chunks on their way to the database: the rows of a chunk as checked and
rendered by the reading thread (`Chunk`, `GoodRow`, `planned`), the writer that stores a
chunk in the batch's transaction (`ChunkWriter`: client references, limits, the INSERTs) and
the queue tasks of the stored lines (`TaskRanges`). See `svc_gateway.batches.storage`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select

from svc_gateway.batches.rows import CLIENT_REFERENCE_REUSED, LIMIT_EXCEEDED, Problem
from svc_gateway.batches.sql_rows import (
    WITHDRAWAL_COLUMNS,
    ColumnValues,
    audit_rows,
    insert_sql,
)
from svc_gateway.limits import (
    Scope,
    Usage,
    add_usage,
    decide,
    limit_exceeded,
    lock_scopes,
    read_usage,
    window_start,
)
from svc_gateway.store import ACTOR_PARTNER, _Plan
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db.models import Withdrawal

MYSQL_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
BATCH_SHARD = 0
"""The limit shard a batch file's counters go to: its transaction holds every shard of its
scopes (`svc_gateway.limits`), so any would do."""


@dataclass(slots=True)
class GoodRow:
    line: int
    new: NewWithdrawal
    plan: _Plan
    withdrawal: Any  # its VALUES tuple's SQL text (SqlValues), or its column dict


@dataclass(slots=True)
class Chunk:
    """A chunk of data rows of the file: the good ones, and the bad ones' problems."""

    rows: int = 0
    good: list[tuple[int, NewWithdrawal]] = field(default_factory=list)
    rows_of_good: list[GoodRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def planned(
    chunk: Chunk,
    plan: Callable[[list[NewWithdrawal]], list[_Plan]],
    values: ColumnValues,
) -> Chunk:
    plans = plan([new for _, new in chunk.good])
    chunk.rows_of_good = [
        GoodRow(line, new, p, values.row(line, new, p))
        for (line, new), p in zip(chunk.good, plans, strict=True)
    ]
    chunk.good = []
    return chunk


class TaskRanges:
    """The queue tasks of the stored lines: one per `size` rows stored together."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ranges: list[tuple[int, int]] = []
        self._first = 0
        self._last = 0
        self._count = 0

    def add(self, lines: Sequence[int]) -> None:
        for line in lines:
            if self._count == 0:
                self._first = line
            self._last = line
            self._count += 1
            if self._count == self._size:
                self._ranges.append((self._first, self._last))
                self._count = 0

    def ranges(self) -> list[tuple[int, int]]:
        if self._count:
            return [*self._ranges, (self._first, self._last)]
        return self._ranges


class ChunkWriter:
    """Each chunk's good rows in the batch's transaction: client references checked within
    the chunk, then against the stored withdrawals (the batch's own earlier rows among them)
    through the unique index, the limits decided under the scopes' locks as a group commit
    decides them, and the rows that pass inserted. Nothing per row outlives its chunk.

    On MariaDB/MySQL the chunk is inserted first and the stored references are looked up
    only when the unique index refuses it (a duplicate key rolls back the statement alone,
    never the transaction): a file without reused references costs no lookup at all."""

    def __init__(
        self,
        conn: Connection,
        batch_id: str,
        partner_id: str,
        sql: bool,
        now: dt.datetime,
        dbapi: Any,
    ) -> None:
        self.conn = conn
        self.batch_id = batch_id
        self.partner_id = partner_id
        self.actor = ACTOR_PARTNER + partner_id
        self.sql = sql
        self.now = now
        self.dbapi = dbapi
        self.locked: set[Scope] = set()
        self.usage: dict[Scope, Usage] = {}

    def write(self, good: Sequence[GoodRow], problems: list[Problem]) -> list[int]:
        """Insert what passes of `good`; the others' problems join `problems`. Returns the
        lines stored."""
        unique = self._unique_in_chunk(good, problems)
        if not self.sql:
            unique = self._not_stored(unique, problems)
        found: list[Problem] = []
        rows = self._within_limits(unique, found)
        if self.sql and found:  # a reused reference is the problem, before any limit
            unique = self._not_stored(unique, problems)
            found = []
            rows = self._within_limits(unique, found)
        try:
            self._insert(rows)
        except self.dbapi.IntegrityError as exc:
            if not self.sql or exc.args[0] != MYSQL_DUPLICATE_KEY:
                raise
            unique = self._not_stored(unique, problems)
            found = []
            rows = self._within_limits(unique, found)
            self._insert(rows)  # a second refusal: another writer meanwhile (raised)
        problems += found
        for g in rows:  # the running usage, for the next chunks
            limits = g.plan.limits
            if limits is not None and limits.counted:
                for scope in limits.scopes():
                    used = self.usage.setdefault(scope, Usage())
                    used.amount += limits.amount
                    used.count += 1
        add_usage(
            self.conn,
            [
                (g.plan.limits, g.plan.limit_bucket)
                for g in rows
                if g.plan.limits is not None and g.plan.limit_bucket is not None
            ],
            BATCH_SHARD,
        )
        return [g.line for g in rows]

    def _insert(self, rows: Sequence[GoodRow]) -> None:
        """The rows' withdrawals (one multi-row INSERT), then their first audit rows copied
        from them (`audit_rows`; one INSERT ... SELECT)."""
        if not rows:
            return
        if not self.sql:
            self.conn.execute(insert(Withdrawal), [g.withdrawal for g in rows])
        else:
            cursor = self.conn.connection.cursor()
            try:
                cursor.execute(
                    insert_sql("withdrawals", WITHDRAWAL_COLUMNS, [g.withdrawal for g in rows])
                )
            finally:
                cursor.close()
        audited = self.conn.execute(
            audit_rows(self.batch_id, rows[0].line, rows[-1].line, self.actor)
        ).rowcount
        if audited != len(rows):  # never: the lines are the batch's own, stored just now
            raise RuntimeError(f"{audited} audit rows for {len(rows)} withdrawals")

    @staticmethod
    def _unique_in_chunk(good: Sequence[GoodRow], problems: list[Problem]) -> list[GoodRow]:
        first: dict[str, int] = {}  # reference -> its first line in the chunk
        unique: list[GoodRow] = []
        for g in good:
            ref = g.new.client_reference
            if ref:
                line = first.setdefault(ref, g.line)
                if line != g.line:
                    problems.append(reused(g, f"repeats the client reference of line {line}"))
                    continue
            unique.append(g)
        return unique

    def _not_stored(self, good: Sequence[GoodRow], problems: list[Problem]) -> list[GoodRow]:
        """`good` without the rows whose client reference a stored withdrawal holds."""
        refs = [g.new.client_reference for g in good if g.new.client_reference]
        if not refs:
            return list(good)
        holders = {
            ref: (withdrawal_id, batch_id, line)
            for ref, withdrawal_id, batch_id, line in self.conn.execute(
                select(
                    Withdrawal.client_reference,
                    Withdrawal.id,
                    Withdrawal.batch_id,
                    Withdrawal.batch_line,
                ).where(
                    Withdrawal.partner_id == self.partner_id,
                    Withdrawal.client_reference_key.in_(refs),
                )
            )
        }
        if not holders:
            return list(good)
        kept = []
        for g in good:
            holder = holders.get(g.new.client_reference)
            if holder is None:
                kept.append(g)
            elif holder[1] == self.batch_id:
                problems.append(reused(g, f"repeats the client reference of line {holder[2]}"))
            else:
                problems.append(reused(g, f"is already used by withdrawals/{holder[0]}"))
        return kept

    def _within_limits(self, rows: Sequence[GoodRow], problems: list[Problem]) -> list[GoodRow]:
        """The rows no limit refuses (against the usage before this chunk, which `write`
        adds them to once they are stored); the refused ones' problems join `problems`."""
        limited = [(i, g.plan.limits) for i, g in enumerate(rows) if g.plan.limits is not None]
        if not limited:
            return list(rows)
        scopes = {s for _, lim in limited for s in lim.scopes()} - self.locked
        if scopes:
            lock_scopes(self.conn, scopes, BATCH_SHARD, whole=scopes)  # every shard
            self.usage.update(read_usage(self.conn, scopes, window_start(self.now)))
            self.locked |= scopes
        refused = decide(limited, self.usage)
        for i, refusal in refused.items():
            g = rows[i]
            err = limit_exceeded(refusal, g.new.token, g.new.user_ref)
            problems.append(Problem(g.line, "amount", LIMIT_EXCEEDED, err.message, ""))
        return [g for i, g in enumerate(rows) if i not in refused]


def reused(g: GoodRow, message: str) -> Problem:
    ref = g.new.client_reference
    return Problem(g.line, "client_reference", CLIENT_REFERENCE_REUSED, message, ref)
