"""Each audit row's snapshot, on MariaDB and SQLite: the withdrawal's transaction hash, fee and
confirmations right after the change (including what changed without a state change since),
covered by the row's hash; rows written before snapshots existed still verify."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, update

from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.audit import GENESIS, Snapshot, audit_hash
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token, Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import Step, move, move_many, verify_audit_chain
from withdrawal_shared.states import State

PARTNER = "snapshot-test"


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


def _withdrawals(engine: Engine, count: int, to: State = State.RECEIVED) -> list[str]:
    with make_sessionmaker(engine).begin() as session:
        ensure_partner(session, PARTNER)
        token = session.scalars(select(Token)).first()
        assert token is not None
        session.flush()
        return [
            add_withdrawal(
                session,
                partner_id=PARTNER,
                token_id=token.id,
                recipient="0x" + f"{i + 1:040x}",
                amount=7,
                to=to,
            )
            for i in range(count)
        ]


def _snapshots(engine: Engine, withdrawal_id: str) -> list[tuple[str, Snapshot | None]]:
    with make_sessionmaker(engine)() as session:
        audits = session.scalars(
            select(WithdrawalAudit)
            .where(WithdrawalAudit.withdrawal_id == withdrawal_id)
            .order_by(WithdrawalAudit.version)
        ).all()
        return [(a.to_state, Snapshot.decode(a.snapshot)) for a in audits]


def _rows(engine: Engine, ids: list[str]) -> list[Withdrawal]:
    with make_sessionmaker(engine)() as session:
        query = select(Withdrawal).where(Withdrawal.id.in_(ids)).order_by(Withdrawal.id)
        return list(session.scalars(query).all())


def test_snapshots_follow_the_payout_including_changes_without_a_new_version(
    engine: Engine,
) -> None:
    ids = _withdrawals(engine, 2, to=State.QUEUED)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        move_many(
            session, _rows(engine, ids), Step(State.SIGNED), actor="t", fields={"tx_hash": "0xa"}
        )
    with sessions.begin() as session:
        move_many(session, _rows(engine, ids), Step(State.BROADCAST), actor="t")
        # A replacement at the same nonce changes the hash without a state change.
        session.execute(update(Withdrawal).where(Withdrawal.id == ids[0]).values(tx_hash="0xb"))
    with sessions.begin() as session:
        move_many(
            session,
            _rows(engine, ids),
            Step(State.CONFIRMING, "MINED"),
            actor="t",
            fields={"confirmations": 1},
        )
    with sessions.begin() as session:  # confirmations counted without a state change
        session.execute(update(Withdrawal).where(Withdrawal.id.in_(ids)).values(confirmations=4))
    with sessions.begin() as session:
        move_many(
            session,
            _rows(engine, ids),
            Step(State.COMPLETED, "CONFIRMED"),
            actor="t",
            fields={"confirmations": 5},
            row_fields={ids[0]: {"fee_wei": 10**30 + 7}, ids[1]: {"fee_wei": 3}},
        )
    empty = Snapshot()
    assert _snapshots(engine, ids[0]) == [
        ("RECEIVED", empty),
        ("VALIDATED", empty),
        ("QUEUED", empty),
        ("SIGNED", Snapshot("0xa")),
        ("BROADCAST", Snapshot("0xa")),
        ("CONFIRMING", Snapshot("0xb", None, 1)),
        ("COMPLETED", Snapshot("0xb", 10**30 + 7, 5)),
    ]
    assert _snapshots(engine, ids[1])[-2:] == [
        ("CONFIRMING", Snapshot("0xa", None, 1)),
        ("COMPLETED", Snapshot("0xa", 3, 5)),
    ]
    with sessions() as session:
        assert all(verify_audit_chain(session, i) for i in ids)


def test_move_records_the_stored_values_under_its_own(engine: Engine) -> None:
    (withdrawal_id,) = _withdrawals(engine, 1, to=State.QUEUED)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        move(session, row, State.SIGNED, actor="t", tx_hash="0xc")
    with sessions.begin() as session:  # changed behind the loaded row's back
        stale = session.get(Withdrawal, withdrawal_id)
        assert stale is not None
        session.execute(update(Withdrawal).values(fee_wei=9).where(Withdrawal.id == withdrawal_id))
        move(session, stale, State.ON_HOLD, actor="t", reason="X", confirmations=0)
    assert _snapshots(engine, withdrawal_id)[-2:] == [
        ("SIGNED", Snapshot("0xc")),
        ("ON_HOLD", Snapshot("0xc", 9, 0)),
    ]


def test_a_path_records_the_new_values_at_its_last_step(engine: Engine) -> None:
    (withdrawal_id,) = _withdrawals(engine, 1)
    with make_sessionmaker(engine).begin() as session:
        move_many(
            session,
            _rows(engine, [withdrawal_id]),
            (Step(State.VALIDATED), Step(State.QUEUED)),
            actor="t",
            fields={"fee_wei": 1},
        )
    assert _snapshots(engine, withdrawal_id)[1:] == [
        ("VALIDATED", Snapshot()),
        ("QUEUED", Snapshot(fee_wei=1)),
    ]


def test_a_snapshot_field_must_be_a_plain_value(engine: Engine) -> None:
    rows = _rows(engine, _withdrawals(engine, 1))
    with (
        pytest.raises(ValueError, match="plain value"),
        make_sessionmaker(engine).begin() as session,
    ):
        move_many(
            session,
            rows,
            Step(State.VALIDATED),
            actor="t",
            fields={"confirmations": Withdrawal.confirmations + 1},
        )


def test_editing_a_snapshot_is_detected(engine: Engine) -> None:
    (withdrawal_id,) = _withdrawals(engine, 1, to=State.QUEUED)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        session.execute(
            update(WithdrawalAudit)
            .where(WithdrawalAudit.withdrawal_id == withdrawal_id, WithdrawalAudit.version == 2)
            .values(snapshot=Snapshot("0xforged").encode())
        )
    with sessions() as session:
        assert not verify_audit_chain(session, withdrawal_id)
    with sessions.begin() as session:  # nor can the snapshot simply be removed
        session.execute(
            update(WithdrawalAudit)
            .where(WithdrawalAudit.withdrawal_id == withdrawal_id, WithdrawalAudit.version == 2)
            .values(snapshot=None)
        )
    with sessions() as session:
        assert not verify_audit_chain(session, withdrawal_id)


def test_rows_written_before_snapshots_still_verify(engine: Engine) -> None:
    """A trail written before migration 0008: no snapshot, hashed without one."""
    (withdrawal_id,) = _withdrawals(engine, 1)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        audit = session.scalars(
            select(WithdrawalAudit).where(WithdrawalAudit.withdrawal_id == withdrawal_id)
        ).one()
        legacy = audit_hash(
            prev_hash=GENESIS,
            withdrawal_id=withdrawal_id,
            version=1,
            from_state="",
            to_state=audit.to_state,
            actor=audit.actor,
            reason=audit.reason,
            message=audit.message,
            reorged=False,
            occur_time=audit.occur_time,
        )
        audit.snapshot = None
        audit.hash = legacy
        session.execute(
            update(Withdrawal).where(Withdrawal.id == withdrawal_id).values(audit_head=legacy)
        )
    with sessions() as session:
        assert verify_audit_chain(session, withdrawal_id)
    with sessions.begin() as session:  # and the trail goes on from it, with snapshots
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        move(session, row, State.VALIDATED, actor="t")
    with sessions() as session:
        assert verify_audit_chain(session, withdrawal_id)
    assert _snapshots(engine, withdrawal_id) == [("RECEIVED", None), ("VALIDATED", Snapshot())]
