"""A batch's database work (synchronous; the core runs it on its thread pool).

Creating a batch is one pass over the spooled file, in ONE transaction. The batch row goes
first (a concurrent upload with the same key collides at once). Then, `INSERT_ROWS` rows at
a time (`svc_gateway.batches.chunks`), the rows are checked (the single create's rules),
their client references checked within the chunk and against the stored withdrawals through
the unique index, which holds the batch's own earlier rows too (on MariaDB/MySQL the INSERT
itself asks it, and only a refused chunk is looked up): no per-row state is kept in memory.
The limits are decided under the scopes' locks (`svc_gateway.limits`, as a group commit
does), and the rows that pass inserted with one multi-row INSERT of withdrawals and one of
audit rows. Problems go to a `ProblemLog` (disk past 1 MiB) and are inserted at the end. On
MariaDB/MySQL the file is read, checked and rendered to SQL in a second thread
(`Prefetched`), two chunks ahead of the INSERTs, so the server's work and ours overlap.
Under REJECT_ALL a problem (a bad row or a limit refusal) rolls it all back and only a
REJECTED batch with its problems is stored. A row's withdrawal has the request_id
`batches/{batch}/{line}`: re-driven, it can never make a second one.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from pymysql.constants.SERVER_STATUS import (  # type: ignore[import-untyped]
    SERVER_STATUS_NO_BACKSLASH_ESCAPES,
)
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from svc_gateway.batches.chunks import Chunk, ChunkWriter, TaskRanges, planned
from svc_gateway.batches.csv_file import read_rows
from svc_gateway.batches.prefetch import Prefetched
from svc_gateway.batches.problem_log import ProblemLog
from svc_gateway.batches.rows import Problem, check_row
from svc_gateway.batches.sql_rows import (
    ColumnValues,
    SqlValues,
)
from svc_gateway.errors import CONCURRENT_MODIFICATION
from svc_gateway.limits import (
    _amount_sum,
    _exact,
)
from svc_gateway.store import WithdrawalStore, _Plan
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db.models import Batch, BatchProblem, Withdrawal
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid

INSERT_ROWS = 2000
"""Rows of the file per chunk: checked together, one multi-row INSERT of their withdrawals
and one of their audit rows."""
YIELD_ROWS = 50
"""Rows the reading thread checks between offers of the GIL to the writer (otherwise the
writer waits up to the interpreter's 5 ms switch interval after each reply)."""
TASK_ROWS = 500
"""Stored rows per queue task (the processor's unit of work)."""
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"


def batch_fingerprint(content_sha256: str, policy: str) -> str:
    return hashlib.sha256(f"{content_sha256}\x1f{policy}".encode()).hexdigest()


@dataclass
class Outcome:
    batch: Batch
    ranges: list[tuple[int, int]] = field(default_factory=list)  # lines of each queue task
    created: bool = False  # False: a repeat of an earlier upload
    problems: list[Problem] = field(default_factory=list)  # the first few, by line
    problem_count: int = 0


class BatchStorage:
    def __init__(self, withdrawals: WithdrawalStore, max_rows: int) -> None:
        self.withdrawals = withdrawals
        self.engine = withdrawals.engine
        self.sessions = withdrawals.sessions
        self.max_rows = max_rows
        self._dbapi: Any = self.engine.dialect.loaded_dbapi

    # ------------------------------------------------------------------ reads

    def by_request(self, partner_id: str, request_id: str) -> Batch | None:
        with self.sessions() as session:
            return session.scalar(
                select(Batch).where(Batch.partner_id == partner_id, Batch.request_id == request_id)
            )

    def by_content(self, partner_id: str, content_sha256: str) -> Batch | None:
        with self.sessions() as session:
            return session.scalar(
                select(Batch)
                .where(
                    Batch.partner_id == partner_id,
                    Batch.content_sha256 == content_sha256,
                    Batch.state == ACCEPTED,
                )
                .limit(1)
            )

    def get(self, partner_id: str, batch_id: str) -> Batch | None:
        with self.sessions() as session:
            return session.scalar(
                select(Batch).where(Batch.id == batch_id, Batch.partner_id == partner_id)
            )

    def page(self, partner_id: str, after_id: str | None, limit: int) -> Sequence[Batch]:
        query = select(Batch).where(Batch.partner_id == partner_id)
        if after_id is not None:
            query = query.where(Batch.id < after_id)
        with self.sessions() as session:
            return session.scalars(query.order_by(Batch.id.desc()).limit(limit)).all()

    def summary(self, batch_id: str) -> tuple[dict[str, int], dict[int, tuple[int, int]]]:
        """(withdrawals per state, (amount, count) per token id) of the batch's rows: one scan,
        summed in SQL as exact integers (DECIMAL on MariaDB, integers on SQLite; never
        floats)."""
        dialect = self.engine.dialect.name
        with self.engine.connect() as connection:
            groups = connection.execute(
                select(
                    Withdrawal.state,
                    Withdrawal.token_id,
                    _amount_sum(Withdrawal.amount, dialect),
                    func.count(),
                )
                .where(Withdrawal.batch_id == batch_id)
                .group_by(Withdrawal.state, Withdrawal.token_id)
            ).all()
        states: dict[str, int] = {}
        totals: dict[int, tuple[int, int]] = {}
        for state, token_id, amount, count in groups:
            states[state] = states.get(state, 0) + int(count)
            total, rows = totals.get(token_id, (0, 0))
            totals[token_id] = (total + _exact(amount), rows + int(count))
        return states, totals

    def report_rows(
        self, batch_id: str, after_line: int, limit: int
    ) -> tuple[Sequence[Withdrawal], Sequence[BatchProblem]]:
        """The batch's withdrawals and problems of the next `limit` lines after `after_line`."""
        with self.sessions() as session:
            withdrawals = session.scalars(
                select(Withdrawal)
                .where(Withdrawal.batch_id == batch_id, Withdrawal.batch_line > after_line)
                .order_by(Withdrawal.batch_line)
                .limit(limit)
            ).all()
            problems = session.scalars(
                select(BatchProblem)
                .where(BatchProblem.batch_id == batch_id, BatchProblem.line > after_line)
                .order_by(BatchProblem.line, BatchProblem.id)
                .limit(limit * 8)
            ).all()
        return withdrawals, problems

    def problems_of(self, batch_id: str, limit: int) -> Sequence[BatchProblem]:
        with self.sessions() as session:
            return session.scalars(
                select(BatchProblem)
                .where(BatchProblem.batch_id == batch_id)
                .order_by(BatchProblem.line, BatchProblem.id)
                .limit(limit)
            ).all()

    def cancellable_ids(self, batch_id: str) -> builtins.list[str]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Withdrawal.id).where(
                        Withdrawal.batch_id == batch_id,
                        Withdrawal.payout_tx_id.is_(None),
                        Withdrawal.payout_number.is_(None),
                        Withdrawal.end_time.is_(None),
                    )
                )
            )

    # ------------------------------------------------------------------ create

    def create(
        self,
        partner_id: str,
        *,
        request_id: str,
        policy: str,
        content_sha256: str,
        size: int,
        created_by: str,
        spool: IO[bytes],
        reference: ReferenceData,
        trace_context: str | None = None,
    ) -> Outcome:
        """Check and store the batch in one pass over the spooled file. Returns the stored
        batch; a concurrent upload with the same key makes this a repeat (created False).
        Raises the file's problem (BATCH_FILE_INVALID, BATCH_TOO_LARGE) with nothing stored.
        `trace_context` (the upload's W3C traceparent) is stored with every row."""
        now = utcnow()
        batch = Batch(
            id=new_ulid(),
            partner_id=partner_id,
            request_id=request_id,
            request_fingerprint=batch_fingerprint(content_sha256, policy),
            content_sha256=content_sha256,
            policy=policy,
            state=ACCEPTED,
            row_count=0,
            accepted_count=0,
            problem_row_count=0,
            size_bytes=size,
            created_by=created_by,
            create_time=now,
            update_time=now,
        )
        with ProblemLog() as problems:
            try:
                ranges = self._store(batch, spool, reference, now, problems, trace_context)
            except _Refused:
                return self._rejected(batch, problems)
            except (IntegrityError, self._dbapi.IntegrityError):
                existing = self.by_request(partner_id, request_id)
                if existing is not None:
                    return Outcome(existing)
                raise CONCURRENT_MODIFICATION.error(
                    "A client reference of the file was taken by another request meanwhile; "
                    "upload the file again with the same key."
                ) from None
            return Outcome(
                batch,
                ranges,
                created=True,
                problems=problems.first,
                problem_count=problems.count,
            )

    def _rejected(self, batch: Batch, problems: ProblemLog) -> Outcome:
        """REJECT_ALL refused the file: the batch, REJECTED, and its problems alone."""
        batch.state = REJECTED
        batch.accepted_count = 0
        batch.problem_row_count = problems.bad_rows
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(Batch), [_columns(batch)])
                for chunk in problems.chunks(INSERT_ROWS):
                    self._insert_problems(conn, batch.id, chunk)
        except IntegrityError:
            existing = self.by_request(batch.partner_id, batch.request_id)
            if existing is None:
                raise
            return Outcome(existing)
        return Outcome(batch, created=True, problems=problems.first, problem_count=problems.count)

    @staticmethod
    def _insert_problems(conn: Connection, batch_id: str, problems: Sequence[Problem]) -> None:
        conn.execute(
            insert(BatchProblem),
            [
                {
                    "batch_id": batch_id,
                    "line": p.line,
                    "column_name": p.column,
                    "reason": p.reason,
                    "message": p.message[:512],
                    "client_reference": p.client_reference[:128],
                }
                for p in problems
            ],
        )

    def _prepared(
        self,
        spool: IO[bytes],
        batch_id: str,
        reference: ReferenceData,
        plan: Callable[[builtins.list[NewWithdrawal]], builtins.list[_Plan]],
        values: ColumnValues,
    ) -> Iterator[Chunk]:
        """The file's rows, `INSERT_ROWS` at a time: checked (the single create's rules),
        planned (tiers and limits) and rendered; runs ahead of the writer, in its own
        thread on MariaDB/MySQL."""
        chunk = Chunk()
        for row in read_rows(spool, self.max_rows):
            chunk.rows += 1
            if chunk.rows % YIELD_ROWS == 0:
                time.sleep(0)  # let the writer thread take the GIL as its reply arrives
            new, problems = check_row(row, batch_id, reference)
            if new is None:
                chunk.problems += problems
            else:
                chunk.good.append((row.line, new))
            if chunk.rows >= INSERT_ROWS:
                yield planned(chunk, plan, values)
                chunk = Chunk()
        if chunk.rows:
            yield planned(chunk, plan, values)

    def _values(
        self,
        conn: Connection,
        partner_id: str,
        batch_id: str,
        now: dt.datetime,
        trace_context: str | None,
    ) -> ColumnValues:
        if self.engine.dialect.driver != "pymysql":
            return ColumnValues(partner_id, batch_id, now, trace_context)
        status = conn.connection.dbapi_connection.server_status  # type: ignore[union-attr]
        return SqlValues(
            partner_id,
            batch_id,
            now,
            trace_context,
            no_backslash_escapes=bool(status & SERVER_STATUS_NO_BACKSLASH_ESCAPES),
        )

    def _store(
        self,
        batch: Batch,
        spool: IO[bytes],
        reference: ReferenceData,
        now: dt.datetime,
        problems: ProblemLog,
        trace_context: str | None,
    ) -> list[tuple[int, int]]:
        """One transaction: the batch row first (a concurrent upload with the same key
        collides at once), then each chunk's good rows, then the problems. Raises _Refused
        (everything rolled back) when REJECT_ALL meets a problem."""
        partner_id = batch.partner_id
        rejecting = batch.policy == "REJECT_ALL"
        tasks = TaskRanges(TASK_ROWS)
        policy = self.withdrawals.limits.get()  # before the transaction (SQLite's lock)
        with self.engine.begin() as conn:
            conn.execute(insert(Batch), [_columns(batch)])
            values = self._values(conn, partner_id, batch.id, now, trace_context)
            writer = ChunkWriter(
                conn, batch.id, partner_id, isinstance(values, SqlValues), now, self._dbapi
            )
            # One policy for the whole file. The tiers are read on a connection of the
            # reading thread's own on MariaDB/MySQL; on SQLite (one thread) in this
            # transaction, as any other connection would wait for its write lock.
            tiers = None if isinstance(values, SqlValues) else conn

            def plan(news: builtins.list[NewWithdrawal]) -> builtins.list[_Plan]:
                return self.withdrawals.plan_items(
                    [(partner_id, new) for new in news], now, policy, tiers
                )

            chunks = self._prepared(spool, batch.id, reference, plan, values)
            with contextlib.ExitStack() as stack:
                if isinstance(values, SqlValues):
                    chunks = iter(stack.enter_context(Prefetched(chunks, 2, "batch-rows")))
                for chunk in chunks:
                    batch.row_count += chunk.rows
                    found = list(chunk.problems)
                    stored = writer.write(chunk.rows_of_good, found)
                    tasks.add(stored)
                    batch.accepted_count += len(stored)
                    problems.add_chunk(found)
            # Under REJECT_ALL the rows after a problem were still written: the duplicates
            # among them are found in the same way, and all of it rolls back.
            if rejecting and problems.count:
                batch.accepted_count = 0
                raise _Refused  # rolls the transaction back
            for chunk_problems in problems.chunks(INSERT_ROWS):
                self._insert_problems(conn, batch.id, chunk_problems)
            batch.problem_row_count = problems.bad_rows
            conn.execute(
                update(Batch)
                .where(Batch.id == batch.id)
                .values(
                    row_count=batch.row_count,
                    accepted_count=batch.accepted_count,
                    problem_row_count=batch.problem_row_count,
                )
            )
        return tasks.ranges()


class _Refused(Exception):
    """REJECT_ALL met a problem: the transaction rolls back."""


def _columns(batch: Batch) -> dict[str, object]:
    return {c.key: getattr(batch, c.key) for c in Batch.__table__.columns}
