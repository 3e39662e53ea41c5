"""A batch's database work (synchronous; the core runs it on its thread pool).

Creating a batch reads the spooled file twice. The first pass checks every row (the single
create's rules, client references against the file and the stored withdrawals) and keeps
only the bad rows' problems. The second pass, in ONE transaction, inserts the batch row
first (so a concurrent upload with the same key collides at once), then the good rows'
withdrawals and their audit rows with multi-row INSERTs of `CHUNK_ROWS` rows, deciding the
limits per chunk under the scopes' locks (`svc_gateway.limits`, as a group commit does),
then the problems. Under REJECT_ALL a bad row (or a limit refusal) rolls it all back and only
a REJECTED batch with its problems is stored. A row's withdrawal has the request_id
`batches/{batch}/{line}`: re-driven, it can never make a second one.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from svc_gateway.batches.csv_file import read_rows
from svc_gateway.batches.rows import LIMIT_EXCEEDED, Problem, check_row
from svc_gateway.errors import CONCURRENT_MODIFICATION
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
from svc_gateway.store import WithdrawalStore, new_row
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db.models import Batch, BatchProblem, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.ids import new_ulid

CHUNK_ROWS = 500
"""Rows per INSERT, and per queue task."""
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"


def batch_fingerprint(content_sha256: str, policy: str) -> str:
    return hashlib.sha256(f"{content_sha256}\x1f{policy}".encode()).hexdigest()


@dataclass
class Outcome:
    batch: Batch
    ranges: list[tuple[int, int]] = field(default_factory=list)  # lines stored together
    created: bool = False  # False: a repeat of an earlier upload
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _Pass:
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    bad_lines: set[int] = field(default_factory=set)


class BatchStorage:
    def __init__(self, withdrawals: WithdrawalStore, max_rows: int) -> None:
        self.withdrawals = withdrawals
        self.engine = withdrawals.engine
        self.sessions = withdrawals.sessions
        self.max_rows = max_rows

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
        """(withdrawals per state, (amount, count) per token id) of the batch's rows."""
        with self.engine.connect() as connection:
            states = connection.execute(
                select(Withdrawal.state, func.count())
                .where(Withdrawal.batch_id == batch_id)
                .group_by(Withdrawal.state)
            ).all()
            tokens = connection.execute(
                select(Withdrawal.token_id, Withdrawal.amount).where(
                    Withdrawal.batch_id == batch_id
                )
            )
            totals: dict[int, tuple[int, int]] = {}
            for token_id, amount in tokens:  # exact integers: summed here, never as floats
                total, count = totals.get(token_id, (0, 0))
                totals[token_id] = (total + int(amount), count + 1)
        return {state: count for state, count in states}, totals

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

    def check(self, partner_id: str, raw: IO[bytes], reference: ReferenceData) -> _Pass:
        """The first pass: every row's problems (nothing is written)."""
        found = _Pass()
        seen: dict[str, int] = {}  # client reference -> its first line in the file
        pending: list[tuple[int, str]] = []  # (line, reference) to look up among the stored
        for row in read_rows(raw, self.max_rows):
            found.rows += 1
            new, problems = check_row(row, "x" * 26, reference)
            ref = row.values["client_reference"]
            if ref and new is not None:
                first = seen.setdefault(ref, row.line)
                if first != row.line:
                    problems.append(
                        Problem(
                            row.line,
                            "client_reference",
                            "CLIENT_REFERENCE_REUSED",
                            f"repeats the client reference of line {first}",
                            ref,
                        )
                    )
                else:
                    pending.append((row.line, ref))
            if problems:
                found.problems += problems
                found.bad_lines.add(row.line)
            if len(pending) >= CHUNK_ROWS:
                self._stored_references(partner_id, pending, found)
                pending = []
        self._stored_references(partner_id, pending, found)
        found.problems.sort(key=lambda p: p.line)
        return found

    def _stored_references(
        self, partner_id: str, pending: Sequence[tuple[int, str]], found: _Pass
    ) -> None:
        holders = self.withdrawals.existing_references([(partner_id, ref) for _, ref in pending])
        for line, ref in pending:
            holder = holders.get((partner_id, ref))
            if holder is not None:
                found.problems.append(
                    Problem(
                        line,
                        "client_reference",
                        "CLIENT_REFERENCE_REUSED",
                        f"is already used by withdrawals/{holder}",
                        ref,
                    )
                )
                found.bad_lines.add(line)

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
        checked: _Pass,
        reference: ReferenceData,
    ) -> Outcome:
        """Store the batch (the second pass). Returns the stored batch; a concurrent upload
        with the same key makes this a repeat (created False)."""
        now = utcnow()
        batch = Batch(
            id=new_ulid(),
            partner_id=partner_id,
            request_id=request_id,
            request_fingerprint=batch_fingerprint(content_sha256, policy),
            content_sha256=content_sha256,
            policy=policy,
            state=ACCEPTED,
            row_count=checked.rows,
            accepted_count=0,
            problem_row_count=len(checked.bad_lines),
            size_bytes=size,
            created_by=created_by,
            create_time=now,
            update_time=now,
        )
        if checked.problems and policy == "REJECT_ALL":
            return self._rejected(batch, checked.problems)
        try:
            outcome = self._store(batch, spool, checked, reference, now)
        except _Refused as refused:
            outcome = Outcome(batch, problems=refused.problems)
        except IntegrityError:
            existing = self.by_request(partner_id, request_id)
            if existing is not None:
                return Outcome(existing)
            raise CONCURRENT_MODIFICATION.error(
                "A client reference of the file was taken by another request meanwhile; "
                "upload the file again with the same key."
            ) from None
        if outcome.problems:  # REJECT_ALL and a limit refused rows: nothing stayed stored
            checked.problems += outcome.problems
            checked.problems.sort(key=lambda p: p.line)
            batch.problem_row_count = len({p.line for p in checked.problems})
            return self._rejected(batch, checked.problems)
        return outcome

    def _rejected(self, batch: Batch, problems: Sequence[Problem]) -> Outcome:
        batch.state = REJECTED
        batch.accepted_count = 0
        try:
            with self.sessions.begin() as session:
                session.add(batch)
                session.flush()
                self._insert_problems(session.connection(), batch.id, problems)
        except IntegrityError:
            existing = self.by_request(batch.partner_id, batch.request_id)
            if existing is None:
                raise
            return Outcome(existing)
        return Outcome(batch, created=True, problems=list(problems))

    @staticmethod
    def _insert_problems(connection: object, batch_id: str, problems: Sequence[Problem]) -> None:
        for start in range(0, len(problems), CHUNK_ROWS):
            connection.execute(  # type: ignore[attr-defined]
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
                    for p in problems[start : start + CHUNK_ROWS]
                ],
            )

    def _good_rows(
        self, spool: IO[bytes], batch_id: str, checked: _Pass, reference: ReferenceData
    ) -> Iterator[builtins.list[tuple[int, NewWithdrawal]]]:
        chunk: builtins.list[tuple[int, NewWithdrawal]] = []
        for row in read_rows(spool, self.max_rows):
            if row.line in checked.bad_lines:
                continue
            new, _ = check_row(row, batch_id, reference)
            if new is None:  # the reference data changed between the passes
                checked.bad_lines.add(row.line)
                continue
            chunk.append((row.line, new))
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _store(
        self,
        batch: Batch,
        spool: IO[bytes],
        checked: _Pass,
        reference: ReferenceData,
        now: dt.datetime,
    ) -> Outcome:
        outcome = Outcome(batch, created=True)
        partner_id = batch.partner_id
        rejecting = batch.policy == "REJECT_ALL"
        refusals: list[Problem] = []
        with self.engine.begin() as conn:
            conn.execute(insert(Batch), [_columns(batch)])
            locked: set[Scope] = set()
            usage: dict[Scope, Usage] = {}
            for chunk in self._good_rows(spool, batch.id, checked, reference):
                items = [(partner_id, new) for _, new in chunk]
                plans = self.withdrawals.plan_items(items, now)
                limited = [(i, p.limits) for i, p in enumerate(plans) if p.limits is not None]
                refused = {}
                if limited:
                    scopes = {s for _, lim in limited for s in lim.scopes()} - locked
                    if scopes:
                        lock_scopes(conn, scopes)
                        usage.update(read_usage(conn, scopes, window_start(now)))
                        locked |= scopes
                    refused = decide(limited, usage)
                    for i, lim in limited:  # the running usage, for the next chunks
                        if i not in refused and lim.counted:
                            for scope in lim.scopes():
                                used = usage.setdefault(scope, Usage())
                                used.amount += lim.amount
                                used.count += 1
                for i, refusal in refused.items():
                    line, new = chunk[i]
                    err = limit_exceeded(refusal, new.token, new.user_ref)
                    refusals.append(Problem(line, "amount", LIMIT_EXCEEDED, err.message, ""))
                if rejecting and refusals:
                    continue  # everything rolls back; the rest is only decided
                rows = [
                    (line, new_row(i, partner_id, new, plans[i], now))
                    for i, (line, new) in enumerate(chunk)
                    if i not in refused
                ]
                if not rows:
                    continue
                conn.execute(
                    insert(Withdrawal),
                    [r.row.columns() | {"batch_id": batch.id, "batch_line": ln} for ln, r in rows],
                )
                conn.execute(insert(WithdrawalAudit), [r.audit for _, r in rows])
                add_usage(
                    conn,
                    [
                        (r.limits, r.row.limit_bucket)
                        for _, r in rows
                        if r.limits is not None and r.row.limit_bucket is not None
                    ],
                )
                outcome.ranges.append((rows[0][0], rows[-1][0]))
                batch.accepted_count += len(rows)
            if rejecting and refusals:
                raise _Refused(refusals)  # rolls the transaction back
            for p in refusals:
                checked.bad_lines.add(p.line)
            problems = sorted(checked.problems + refusals, key=lambda p: p.line)
            batch.problem_row_count = len({p.line for p in problems})
            self._insert_problems(conn, batch.id, problems)
            conn.execute(
                update(Batch)
                .where(Batch.id == batch.id)
                .values(
                    accepted_count=batch.accepted_count,
                    problem_row_count=batch.problem_row_count,
                )
            )
        return outcome


class _Refused(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("limits refused rows")
        self.problems = problems


def _columns(batch: Batch) -> dict[str, object]:
    return {c.key: getattr(batch, c.key) for c in Batch.__table__.columns}
