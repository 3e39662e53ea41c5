"""`transitions.move_many` on MariaDB and SQLite: many withdrawals moved in one statement keep
everything `move` guarantees one by one: compare-and-set on each row (all or nothing), one
audit row per withdrawal and step, and an unbroken hash chain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, update

from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import (
    Step,
    TransitionConflict,
    move,
    move_many,
    verify_audit_chain,
)
from withdrawal_shared.states import State

QUEUE = (Step(State.VALIDATED, "VALIDATED"), Step(State.QUEUED, "QUEUED", "queued"))


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


def _withdrawals(engine: Engine, count: int, to: State = State.RECEIVED) -> list[str]:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        ensure_partner(session, "move-many-test")
        token = session.scalars(select(Token)).first()
        assert token is not None
        session.flush()
        return [
            add_withdrawal(
                session,
                partner_id="move-many-test",
                token_id=token.id,
                recipient="0x" + f"{i:040x}",
                amount=1_000 + i,
                to=to,
            )
            for i in range(count)
        ]


def _rows(engine: Engine, ids: list[str]) -> list[Withdrawal]:
    with make_sessionmaker(engine)() as session:
        return list(session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))).all())


def test_a_path_of_two_steps_writes_two_chained_audit_rows_per_withdrawal(engine: Engine) -> None:
    ids = _withdrawals(engine, 5)
    rows = _rows(engine, ids)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        moved = move_many(session, rows, QUEUE, actor="test")
    assert [(m.withdrawal_id, m.to_state, m.version) for m in moved] == [
        (r.id, state, version)
        for r in rows
        for state, version in ((State.VALIDATED, 2), (State.QUEUED, 3))
    ]
    with sessions() as session:
        for stored in session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))):
            assert (stored.state, stored.version, stored.state_message) == ("QUEUED", 3, "queued")
            assert verify_audit_chain(session, stored.id)
        audits = session.scalars(
            select(WithdrawalAudit)
            .where(WithdrawalAudit.withdrawal_id == ids[0])
            .order_by(WithdrawalAudit.version)
        ).all()
    assert [(a.from_state, a.to_state) for a in audits] == [
        ("", "RECEIVED"),
        ("RECEIVED", "VALIDATED"),
        ("VALIDATED", "QUEUED"),
    ]
    # The objects given are updated like `move` does, so the caller can move them on.
    assert {(r.state, r.version) for r in rows} == {("QUEUED", 3)}


def test_one_concurrent_change_rolls_back_the_whole_batch(engine: Engine) -> None:
    ids = _withdrawals(engine, 4, to=State.QUEUED)
    rows = _rows(engine, ids)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:  # a partner cancels one of them first
        cancelled = session.get(Withdrawal, ids[2])
        assert cancelled is not None
        move(session, cancelled, State.CANCELLED, actor="partner", reason="CANCELLED_BY_PARTNER")
    with pytest.raises(TransitionConflict), sessions.begin() as session:
        move_many(session, rows, Step(State.ON_HOLD, "X"), actor="test")
    with sessions() as session:
        states = dict(
            session.execute(
                select(Withdrawal.id, Withdrawal.state).where(Withdrawal.id.in_(ids))
            ).all()
        )
        audit_count = len(
            session.scalars(
                select(WithdrawalAudit).where(WithdrawalAudit.withdrawal_id.in_(ids))
            ).all()
        )
    assert states == {i: ("CANCELLED" if i == ids[2] else "QUEUED") for i in ids}
    assert audit_count == 4 * 3 + 1  # nothing of the failed batch was written


def test_a_where_condition_is_part_of_the_compare_and_set(engine: Engine) -> None:
    ids = _withdrawals(engine, 2, to=State.QUEUED)
    rows = _rows(engine, ids)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        session.execute(update(Withdrawal).where(Withdrawal.id == ids[0]).values(payout_number=7))
    with pytest.raises(TransitionConflict), sessions.begin() as session:
        move_many(
            session,
            rows,
            Step(State.CANCELLED),
            actor="test",
            where=[Withdrawal.payout_number.is_(None)],
        )


def test_rows_in_different_states_and_fields_of_their_own(engine: Engine) -> None:
    broadcast = _withdrawals(engine, 2, to=State.QUEUED)
    rows = _rows(engine, broadcast)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        move_many(session, rows, Step(State.SIGNED), actor="test", fields={"tx_hash": "0xab"})
        move_many(session, rows[:1], Step(State.BROADCAST), actor="test")
    # One SIGNED and one BROADCAST row, completed together with a fee share each.
    fees = {rows[0].id: {"fee_wei": 10**30 + 1}, rows[1].id: {"fee_wei": 5}}
    with sessions.begin() as session:
        moved = move_many(
            session,
            _rows(engine, broadcast),
            Step(State.CONFIRMING, "MINED"),
            actor="monitor",
            fields={"confirmations": 3},
            row_fields=fees,
        )
    assert {m.from_state for m in moved} == {State.SIGNED, State.BROADCAST}
    with sessions() as session:
        for stored in session.scalars(select(Withdrawal).where(Withdrawal.id.in_(broadcast))):
            assert stored.state == State.CONFIRMING
            assert stored.fee_wei == fees[stored.id]["fee_wei"]
            assert (stored.confirmations, stored.tx_hash) == (3, "0xab")
            assert verify_audit_chain(session, stored.id)


def test_a_move_the_lifecycle_forbids_changes_nothing(engine: Engine) -> None:
    rows = _rows(engine, _withdrawals(engine, 2))
    with pytest.raises(ValueError, match="not allowed"), make_sessionmaker(engine).begin() as s:
        move_many(s, rows, Step(State.COMPLETED), actor="test")
    assert {r.state for r in _rows(engine, [r.id for r in rows])} == {"RECEIVED"}
