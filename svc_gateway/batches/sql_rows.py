"""A batch row's two database rows (its withdrawal, RECEIVED, and that withdrawal's first
audit row): the same columns and hash as the single create's `svc_gateway.store.new_row`,
without its per-row objects.

The withdrawal is built straight from the checked row. On MariaDB/MySQL through PyMySQL
(`SqlValues`) it becomes the text of one `(...)` tuple of a multi-row INSERT, rendered once,
here, in the thread that reads the file; the driver's own per-value escaping cost more CPU
than everything else of the ingest. Strings are quoted as `withdrawal_shared.db.sql_text`
quotes them. Elsewhere (SQLite) it stays a column dict for SQLAlchemy's executemany
(`ColumnValues`).

The audit rows are not sent at all: every field of a new withdrawal's first audit row is
either the batch's (actor, time, the RECEIVED transition, the genesis hash, the empty
snapshot) or already in its withdrawal row (id, reason and message as `state_reason` and
`state_message`, the hash as `audit_head`), so `audit_rows` copies them from the chunk's
stored withdrawals with one INSERT ... SELECT on the server, which parses a chunk's 12 audit
values per row once instead of once per row. (On MariaDB with `innodb_autoinc_lock_mode` 1,
its default, an INSERT ... SELECT holds `withdrawal_audit`'s AUTO-INC lock until it ends,
about 10 ms a chunk: an audit row another transaction writes meanwhile waits that long.)"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import Insert, false, insert, literal, select

from svc_gateway.store import ACTOR_PARTNER, _Plan, received_audit
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db.audit import GENESIS, NEW_SNAPSHOT_TEXT, occur_time_text
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.sql_text import BACKSLASH_ESCAPES, QUOTES_ONLY
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import State

WITHDRAWAL_COLUMNS = (
    "id",
    "partner_id",
    "request_id",
    "request_fingerprint",
    "client_reference",
    "chain",
    "token_id",
    "recipient",
    "amount",
    "priority",
    "state",
    "state_reason",
    "state_message",
    "confirmations",
    "version",
    "audit_head",
    "create_time",
    "update_time",
    "user_ref",
    "limit_bucket",
    "batch_id",
    "batch_line",
    "trace_context",
)
AUDIT_COLUMNS = (
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
RECEIVED = State.RECEIVED.value
_QUOTED_KEPT = 64
ID_BLOCK = 2000
"""Withdrawal ids taken from the generator at once (`UlidGenerator.many`)."""


class ColumnValues:
    """Rows as column dicts (SQLAlchemy types them)."""

    def __init__(
        self,
        partner_id: str,
        batch_id: str,
        now: dt.datetime,
        trace_context: str | None = None,
    ) -> None:
        self.partner_id = partner_id
        self.batch_id = batch_id
        self.now = now
        self.actor = ACTOR_PARTNER + partner_id
        self.trace_context = trace_context
        # The audit hash's fields (`audit_hash`) but the id, reason and message are the
        # same for every row of the batch: joined once.
        self._hash_head = f"{GENESIS}\x1f"
        self._hash_middle = f"\x1f1\x1f\x1f{RECEIVED}\x1f{self.actor}\x1f"
        self._hash_tail = f"\x1f0\x1f{occur_time_text(now)}\x1f{NEW_SNAPSHOT_TEXT}"
        self._ids: list[str] = []

    def new_id(self) -> str:
        """The next withdrawal id (a block of `ID_BLOCK` taken at once)."""
        if not self._ids:
            self._ids = new_ulid.many(ID_BLOCK)
            self._ids.reverse()
        return self._ids.pop()

    def digest(self, withdrawal_id: str, reason: str, message: str) -> str:
        """`audit_hash` of the row's first audit row (RECEIVED, at the batch's time)."""
        text = (
            self._hash_head + withdrawal_id + self._hash_middle + reason + "\x1f" + message
        ) + self._hash_tail
        return hashlib.sha256(text.encode()).hexdigest()

    def columns(self, line: int, new: NewWithdrawal, plan: _Plan) -> dict[str, Any]:
        withdrawal_id = self.new_id()
        reason, message = received_audit(new, plan)
        return {
            "id": withdrawal_id,
            "partner_id": self.partner_id,
            "request_id": new.request_id,
            "request_fingerprint": new.fingerprint,
            "client_reference": new.client_reference,
            "chain": new.chain,
            "token_id": new.token.id,
            "recipient": new.recipient,
            "amount": new.amount,
            "priority": plan.priority.value,
            "state": RECEIVED,
            "state_reason": reason,
            "state_message": message,
            "confirmations": 0,
            "version": 1,
            # The hash of its first audit row, which `audit_rows` copies from this row.
            "audit_head": self.digest(withdrawal_id, reason, message),
            "create_time": self.now,
            "update_time": self.now,
            "user_ref": new.user_ref,
            "limit_bucket": plan.limit_bucket,
            "batch_id": self.batch_id,
            "batch_line": line,
            # The upload's ingest span (None with tracing off): the rows' state changes join
            # the batch's trace.
            "trace_context": self.trace_context,
        }

    def row(self, line: int, new: NewWithdrawal, plan: _Plan) -> Any:
        """The withdrawal as the INSERT takes it (here its column dict)."""
        return self.columns(line, new, plan)


class SqlValues(ColumnValues):
    """Rows as the SQL text of their VALUES tuples, for a connection whose string literals
    escape with backslashes unless `no_backslash_escapes` (the server's sql_mode)."""

    def __init__(
        self,
        partner_id: str,
        batch_id: str,
        now: dt.datetime,
        trace_context: str | None = None,
        *,
        no_backslash_escapes: bool,
    ) -> None:
        super().__init__(partner_id, batch_id, now, trace_context)
        self._table = QUOTES_ONLY if no_backslash_escapes else BACKSLASH_ESCAPES
        q = self.quote
        time = "'" + now.strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
        # The columns every row of the batch shares, rendered once.
        self._partner = q(partner_id)
        self._created = f"'{RECEIVED}',"
        self._times = f"{time},{time},"
        self._batch = q(batch_id)
        self._trace = "NULL" if trace_context is None else q(trace_context)
        self._quoted: dict[str, str] = {}

    def quote(self, text: str) -> str:
        return "'" + text.translate(self._table) + "'"

    def _remember(self, text: str) -> str:
        """`text` quoted, and kept for the next rows (at most `_QUOTED_KEPT` texts)."""
        quoted = self.quote(text)
        if len(self._quoted) < _QUOTED_KEPT:
            self._quoted[text] = quoted
        return quoted

    def row(self, line: int, new: NewWithdrawal, plan: _Plan) -> str:
        q = self.quote
        withdrawal_id = self.new_id()
        reason, message = received_audit(new, plan)
        digest = self.digest(withdrawal_id, reason, message)
        bucket = "NULL" if plan.limit_bucket is None else str(plan.limit_bucket)
        # The few texts every row repeats (the chain, the priority, the audit reason and
        # message) are quoted once each.
        quoted = self._quoted
        reason_q = quoted.get(reason) or self._remember(reason)
        message_q = quoted.get(message) or self._remember(message)
        chain_q = quoted.get(new.chain) or self._remember(new.chain)
        priority_q = quoted.get(plan.priority.value) or self._remember(plan.priority.value)
        user_ref_q = q(new.user_ref) if new.user_ref else "''"
        return (
            f"('{withdrawal_id}',{self._partner},{q(new.request_id)},'{new.fingerprint}',"
            f"{q(new.client_reference)},{chain_q},{new.token.id},{q(new.recipient)},"
            f"{int(new.amount)},{priority_q},{self._created}{reason_q},{message_q},"
            f"0,1,'{digest}',{self._times}{user_ref_q},{bucket},{self._batch},{line},"
            f"{self._trace})"
        )


def insert_sql(table: str, columns: tuple[str, ...], values: list[str]) -> str:
    """One multi-row INSERT of rendered VALUES tuples (`SqlValues.row`); every value in them
    was escaped or produced by this module."""
    return f"INSERT INTO {table} ({','.join(columns)}) VALUES {','.join(values)}"  # noqa: S608


def audit_rows(batch_id: str, first_line: int, last_line: int, actor: str) -> Insert:
    """The first audit row of each of the batch's withdrawals of lines `first_line` to
    `last_line` (those one chunk just stored), in line order, copied from the withdrawals:
    the fields `ColumnValues.digest` hashed, the ones every row shares as literals, the
    others from the row (`state_reason`, `state_message`; `audit_head` is the hash). Through
    the index on (batch_id, batch_line)."""
    w = Withdrawal
    return insert(WithdrawalAudit).from_select(
        list(AUDIT_COLUMNS),
        select(
            w.id,
            literal(1),
            literal(""),
            literal(RECEIVED),
            literal(actor),
            w.state_reason,
            w.state_message,
            false(),
            w.create_time,
            literal(GENESIS),
            w.audit_head,
            literal(NEW_SNAPSHOT_TEXT),
        )
        .where(w.batch_id == batch_id, w.batch_line.between(first_line, last_line))
        .order_by(w.batch_line),
    )
