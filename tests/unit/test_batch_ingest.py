"""The parts of a batch's ingest that need no database server: the rows' SQL text against
the driver's own escaping, the rows' columns (and the audit rows copied from them, on an
in-memory SQLite database) against the single create's, the problem log, the reading thread,
and the ids every row gets."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator

import pytest
from pymysql.converters import escape_item  # type: ignore[import-untyped]
from sqlalchemy import create_engine, insert, select

from svc_gateway.batches.prefetch import Prefetched
from svc_gateway.batches.problem_log import FIRST_KEPT, ProblemLog
from svc_gateway.batches.rows import Problem
from svc_gateway.batches.sql_rows import (
    AUDIT_COLUMNS,
    WITHDRAWAL_COLUMNS,
    ColumnValues,
    SqlValues,
    audit_rows,
)
from svc_gateway.limits import bucket_of
from svc_gateway.store import _Plan, new_row
from svc_gateway.validation import NewWithdrawal, fingerprint
from tests.unit.test_batch_csv import USDC
from withdrawal_shared import ids
from withdrawal_shared.amounts import BaseUnits
from withdrawal_shared.db.models import Base, Withdrawal, WithdrawalAudit
from withdrawal_shared.states import Priority

NOW = dt.datetime(2026, 12, 6, 21, 30, 5, 123456)
BATCH = "01j0000000000000000000000a"
TRICKY = 'it\'s a "ref" with \\ back\nslash\r\x00\x1a and ünïcödé'


def new(client_reference: str = TRICKY, user_ref: str = "") -> NewWithdrawal:
    recipient = "0x52908400098527886e0f7030069857d2e4169ee7"
    return NewWithdrawal(
        request_id=f"batches/{BATCH}/7",
        fingerprint=fingerprint(
            "polygon", "USDC", recipient, 1_500_000, None, client_reference, user_ref
        ),
        client_reference=client_reference,
        chain="polygon",
        token=USDC,
        recipient=recipient,
        amount=BaseUnits(1_500_000),
        priority=None,
        user_ref=user_ref,
    )


PLANS = [
    _Plan(Priority.STANDARD, None, None),
    _Plan(Priority.EMERGENCY, None, bucket_of(NOW)),
]


def fixed_ulid(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(ColumnValues, "new_id", lambda self: value)
    monkeypatch.setattr("svc_gateway.store.new_ulid", lambda: value)


@pytest.mark.parametrize("plan", PLANS)
def test_a_row_s_columns_and_audit_row_are_the_single_create_s(
    monkeypatch: pytest.MonkeyPatch, plan: _Plan
) -> None:
    fixed_ulid(monkeypatch, "01jefk0000000000000000000a")
    withdrawal = ColumnValues("p-1", BATCH, NOW).columns(7, new(), plan)
    single = new_row(0, "p-1", new(), plan, NOW)
    expected = single.row.columns()
    for column in ("tx_hash", "fee_wei", "end_time"):
        assert expected.pop(column) is None  # left to their NULL default
    assert withdrawal == expected | {"batch_id": BATCH, "batch_line": 7}
    assert set(withdrawal) == set(WITHDRAWAL_COLUMNS) and set(single.audit) == set(AUDIT_COLUMNS)
    # The audit row the batch's INSERT ... SELECT copies from the stored withdrawal.
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[Withdrawal.__table__, WithdrawalAudit.__table__])
    with engine.begin() as conn:
        conn.execute(insert(Withdrawal), [withdrawal])
        assert conn.execute(audit_rows(BATCH, 7, 7, "partner:p-1")).rowcount == 1
        stored = conn.execute(select(WithdrawalAudit)).mappings().one()
    assert {c: stored[c] for c in AUDIT_COLUMNS} == single.audit


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("reference", [TRICKY, "", "plain-1"])
def test_a_row_s_sql_text_is_the_driver_s_escaping_of_its_columns(
    monkeypatch: pytest.MonkeyPatch, plan: _Plan, reference: str
) -> None:
    fixed_ulid(monkeypatch, "01jefk0000000000000000000b")
    columns = ColumnValues("p-'1", BATCH, NOW).columns(7, new(reference), plan)
    text = SqlValues("p-'1", BATCH, NOW, no_backslash_escapes=False).row(7, new(reference), plan)
    literal = "(" + ",".join(escape_item(columns[c], "utf8mb4") for c in WITHDRAWAL_COLUMNS) + ")"
    assert text == literal


def test_without_backslash_escapes_only_quotes_are_doubled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixed_ulid(monkeypatch, "01jefk0000000000000000000c")
    withdrawal = SqlValues("p", BATCH, NOW, no_backslash_escapes=True).row(
        7, new("a'b\\c"), PLANS[0]
    )
    assert "'a''b\\c'" in withdrawal


def test_the_problem_log_keeps_the_first_in_line_order_and_counts_bad_rows() -> None:
    with ProblemLog() as log:
        log.add_chunk(
            [
                Problem(5, "amount", "R", "m", ""),
                Problem(3, "token", "R", "m", "x"),
                Problem(3, "amount", "R", "m", "x"),
            ]
        )
        log.add_chunk([])
        log.add_chunk(Problem(line, "", "R", "é" * 100, "r") for line in range(10, 30_010))
        assert (log.count, log.bad_rows) == (30_003, 30_002)
        assert [p.line for p in log.first] == [3, 3, 5, *range(10, 10 + FIRST_KEPT - 3)]
        read = [p for chunk in log.chunks(7_000) for p in chunk]
        assert [len(c) for c in log.chunks(7_000)] == [7_000] * 4 + [2_003]
        assert read[:3] == sorted(read[:3], key=lambda p: p.line)
        assert read[-1] == Problem(30_009, "", "R", "é" * 100, "r")
        assert log._file._rolled  # type: ignore[attr-defined]  # past 1 MiB: on disk


def test_prefetched_runs_ahead_in_its_thread_and_raises_the_source_s_error() -> None:
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(5):
            threads.add(threading.current_thread().name)
            yield i
        raise ValueError("line 7 is bad")

    with Prefetched(source(), 2, "reader") as items:
        got = []
        with pytest.raises(ValueError, match="line 7"):
            for i in items:
                got.append(i)
    assert got == [0, 1, 2, 3, 4] and threads == {"reader"}


def test_leaving_prefetched_early_stops_its_thread() -> None:
    read = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            read.append(i)
            yield i
            i += 1

    with Prefetched(endless(), 2, "reader") as items:
        for i in items:
            if i == 3:
                break
    count = len(read)
    assert count <= 3 + 1 + 2 + 1  # what was consumed, in the queue, and in hand
    assert len(read) == count


def test_ulids_are_crockford_base32_of_the_time_and_randomness() -> None:
    def reference(value: int, length: int) -> str:
        digits = []
        for _ in range(length):
            digits.append(ids._ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(digits))

    rng = random.Random(7)
    for _ in range(2_000):
        ms, rand = rng.getrandbits(48), rng.getrandbits(80)
        assert ids._encode(ms << 80 | rand) == reference(ms, 10) + reference(rand, 16)
    made = [ids.new_ulid() for _ in range(1_000)]
    assert made == sorted(made) and len(set(made)) == 1_000
    assert all(ids.is_ulid(i) for i in made)


def test_ulids_made_many_at_once_are_those_made_one_by_one_in_one_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = [ids.new_ulid(), *ids.new_ulid.many(2_000), ids.new_ulid()]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(ids.is_ulid(i) for i in made) and ids.new_ulid.many(0) == []
    ms = 1_700_000_000_123
    monkeypatch.setattr(ids.time, "time_ns", lambda: ms * 1_000_000)
    generator = ids.UlidGenerator()
    first = generator()
    one_by_one = [generator() for _ in range(5)]
    at_once = ids.UlidGenerator()
    at_once._last_ms, at_once._last_random = generator._last_ms, generator._last_random - 5
    assert at_once.many(5) == one_by_one
    assert first < one_by_one[0] and first[:10] == one_by_one[0][:10]


def test_a_batch_takes_each_row_s_id_once_in_order() -> None:
    values = ColumnValues("p", BATCH, NOW)
    taken = [values.new_id() for _ in range(5_000)]
    assert taken == sorted(taken) and len(set(taken)) == 5_000


def test_a_source_left_early_is_closed_in_its_thread() -> None:
    closed_in: list[str] = []

    def source() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed_in.append(threading.current_thread().name)

    with Prefetched(source(), 1, "reader") as items:
        assert next(iter(items)) == 0
    assert closed_in == ["reader"]
