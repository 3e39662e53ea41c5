"""State change spans on MariaDB and SQLite: `move` and `move_many` record one span per state
change, the child of the withdrawal's stored `trace_context` (migration 0017), when their
transaction commits, and none when it rolls back. Tracing runs on a tracer of a local
provider writing to memory; the global provider is never touched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, select, update

from tests.support.spans import spans_in_memory
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token, Withdrawal
from withdrawal_shared.db.transitions import Step, move, move_many, rows_as_read
from withdrawal_shared.states import State

STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Rollback(Exception):
    pass


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with spans_in_memory(monkeypatch) as (_, _, exporter):
        yield exporter


def _withdrawals(engine: Engine, count: int) -> list[str]:
    with make_sessionmaker(engine).begin() as session:
        ensure_partner(session, "trace-test")
        token = session.scalars(select(Token)).first()
        assert token is not None
        session.flush()
        ids = [
            add_withdrawal(
                session,
                partner_id="trace-test",
                token_id=token.id,
                recipient="0x" + f"{i + 1:040x}",
                amount=1_000 + i,
                to=State.RECEIVED,
            )
            for i in range(count)
        ]
        session.execute(
            update(Withdrawal).where(Withdrawal.id.in_(ids)).values(trace_context=STORED)
        )
        return ids


def _changes(exporter: InMemorySpanExporter) -> list[tuple[str, int, str, str]]:
    found = []
    for span in exporter.get_finished_spans():
        attributes = span.attributes or {}
        assert span.parent is not None
        found.append(
            (
                str(attributes["withdrawal.id"]),
                int(str(attributes["withdrawal.version"])),
                f"{span.context.trace_id:032x}",
                f"{span.parent.span_id:016x}",
            )
        )
    return sorted(found)


def test_committed_moves_are_children_of_the_stored_context(
    engine: Engine, exported: InMemorySpanExporter
) -> None:
    ids = _withdrawals(engine, 3)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        row = session.get(Withdrawal, ids[0])
        assert row is not None and row.trace_context == STORED
        moved = move(session, row, State.VALIDATED, actor="test")
        assert moved.trace_context == STORED
        assert exported.get_finished_spans() == ()  # not before the commit
    with sessions.begin() as session:
        many = move_many(
            session,
            rows_as_read(session, Withdrawal.id.in_(ids[1:])),
            (Step(State.VALIDATED), Step(State.QUEUED)),
            actor="test",
        )
        assert {m.trace_context for m in many} == {STORED}
    _, trace_id, span_id, _ = STORED.split("-")
    assert _changes(exported) == sorted(
        [(ids[0], 2, trace_id, span_id)]
        + [(i, version, trace_id, span_id) for i in ids[1:] for version in (2, 3)]
    )


def test_rolled_back_moves_leave_no_span(engine: Engine, exported: InMemorySpanExporter) -> None:
    ids = _withdrawals(engine, 2)
    sessions = make_sessionmaker(engine)
    with pytest.raises(Rollback), sessions.begin() as session:
        row = session.get(Withdrawal, ids[0])
        assert row is not None
        move(session, row, State.VALIDATED, actor="test")
        move_many(
            session,
            rows_as_read(session, Withdrawal.id == ids[1]),
            Step(State.VALIDATED),
            actor="test",
        )
        raise Rollback
    with sessions() as session:  # closed without a commit
        row = session.get(Withdrawal, ids[0])
        assert row is not None
        move(session, row, State.VALIDATED, actor="test")
    assert exported.get_finished_spans() == ()
    with sessions.begin() as session:  # nothing left over from the rolled-back ones
        row = session.get(Withdrawal, ids[1])
        assert row is not None and row.state == State.RECEIVED
        move(session, row, State.VALIDATED, actor="test")
    assert [c[0] for c in _changes(exported)] == [ids[1]]
