"""The data layer on MariaDB and SQLite: exact integers, migrations that match the models,
compare-and-set transitions and a tamper-evident audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text, update

from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Base, Token, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import (
    TransitionConflict,
    move,
    verify_audit_chain,
)
from withdrawal_shared.states import State


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


def _new_withdrawal(engine: Engine, amount: int) -> str:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        ensure_partner(session, "schema-test")
        token = session.scalars(select(Token)).first()
        assert token is not None
        session.flush()
        return add_withdrawal(
            session,
            partner_id="schema-test",
            token_id=token.id,
            recipient="0x" + "11" * 20,
            amount=amount,
        )


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


@pytest.mark.parametrize("amount", [1, 10**18, 10**64, 10**65 - 1, 123456789012345678901234567])
def test_integer_amounts_round_trip_exactly(engine: Engine, amount: int) -> None:
    withdrawal_id = _new_withdrawal(engine, amount)
    with make_sessionmaker(engine)() as session:
        stored = session.scalar(select(Withdrawal.amount).where(Withdrawal.id == withdrawal_id))
    assert stored == amount
    assert isinstance(stored, int)


def test_amount_column_is_exact_not_float(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        return  # text on SQLite: the round-trip test above is the proof
    with engine.connect() as connection:
        column_type = connection.execute(
            text(
                "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                "DATABASE() AND TABLE_NAME = 'withdrawals' AND COLUMN_NAME = 'amount'"
            )
        ).scalar_one()
    assert column_type == "decimal(65,0)"


def test_floats_are_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="integers"):
        _new_withdrawal(engine, 1.5)  # type: ignore[arg-type]


def test_transition_is_compare_and_set(engine: Engine) -> None:
    withdrawal_id = _new_withdrawal(engine, 1)
    sessions = make_sessionmaker(engine)
    with sessions() as s1, sessions() as s2:
        stale = s1.get(Withdrawal, withdrawal_id)
        s1.commit()  # end the read transaction; the row stays loaded (no expiry on commit)
        fresh = s2.get(Withdrawal, withdrawal_id)
        s2.commit()
        assert stale is not None and fresh is not None
        with s2.begin():
            move(s2, fresh, State.VALIDATED, actor="test")
        with pytest.raises(TransitionConflict), s1.begin():
            move(s1, stale, State.VALIDATED, actor="racer")
    with sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None and row.state == "VALIDATED" and row.version == 2
        assert verify_audit_chain(session, withdrawal_id)


def test_forbidden_moves_raise(engine: Engine) -> None:
    withdrawal_id = _new_withdrawal(engine, 1)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        with pytest.raises(ValueError, match="not allowed"):
            move(session, row, State.COMPLETED, actor="test")


def test_audit_tampering_is_detected(engine: Engine) -> None:
    withdrawal_id = _new_withdrawal(engine, 1)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        move(session, row, State.VALIDATED, actor="processor", reason="OK")
        move(session, row, State.REJECTED, actor="processor", reason="LIMIT")
    with sessions() as session:
        assert verify_audit_chain(session, withdrawal_id)
    with sessions.begin() as session:
        session.execute(
            update(WithdrawalAudit)
            .where(WithdrawalAudit.withdrawal_id == withdrawal_id, WithdrawalAudit.version == 2)
            .values(actor="someone-else")
        )
    with sessions() as session:
        assert not verify_audit_chain(session, withdrawal_id)


def test_terminal_moves_set_end_time(engine: Engine) -> None:
    withdrawal_id = _new_withdrawal(engine, 1)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        move(session, row, State.CANCELLED, actor="test")
    with sessions() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None and isinstance(row.end_time, dt.datetime)
