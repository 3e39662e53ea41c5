"""The outbox cursor on real MariaDB: a transaction holding a lower audit id open while a
higher one commits loses nothing; a rolled-back id is skipped after the grace period; every
event is fanned out once, in the same transaction as the cursor."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from svc_webhooks.outbox import poll_outbox
from tests.support.databases import mariadb_database
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    Token,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutboxCursor,
    Withdrawal,
    WithdrawalAudit,
)
from withdrawal_shared.db.transitions import move, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import State
from withdrawal_shared.webhooks.secrets import SecretBox, new_secret

PARTNER = "outbox-partner"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with mariadb_database() as url:
        eng = make_engine(url, pool_size=4)
        yield eng
        eng.dispose()


@pytest.fixture(scope="module")
def sessions(engine: Engine) -> sessionmaker[Session]:
    made = make_sessionmaker(engine)
    with made.begin() as session:
        ensure_partner(session, PARTNER)
        session.flush()
        now = utcnow()
        session.add(
            WebhookEndpoint(
                id=new_ulid(),
                partner_id=PARTNER,
                url="https://example.invalid/hook",
                description="",
                event_types="",
                state="ENABLED",
                state_reason="",
                secret=SecretBox(b"k" * 32).seal(new_secret()),
                previous_secret=None,
                previous_secret_expire_time=None,
                request_id=None,
                create_time=now,
                update_time=now,
            )
        )
    return made


def _withdrawal(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        token = session.scalars(select(Token.id)).first()
        assert token is not None
        return add_withdrawal(
            session, partner_id=PARTNER, token_id=token, recipient="0x" + "12" * 20, amount=1
        )


def _poll(sessions: sessionmaker[Session], now: float | None = None, grace: float = 60.0) -> None:
    with sessions.begin() as session:
        poll_outbox(session, batch=100, gap_grace_seconds=grace, now=now)


def _events(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(WebhookDelivery.event_id).order_by(WebhookDelivery.id)))


def _cursor(sessions: sessionmaker[Session]) -> tuple[int, dict[str, float]]:
    with sessions() as session:
        row = session.get(WebhookOutboxCursor, "withdrawal_audit")
        assert row is not None
        return row.frontier, json.loads(row.gaps)


def _validate(session: Session, withdrawal_id: str) -> None:
    row = session.get(Withdrawal, withdrawal_id, with_for_update=True)
    assert row is not None
    move(session, row, State.VALIDATED, actor="test", reason="VALIDATED")


def test_a_lower_id_committed_after_a_higher_one_is_delivered(
    sessions: sessionmaker[Session],
) -> None:
    first, second = _withdrawal(sessions), _withdrawal(sessions)
    _poll(sessions)
    before = set(_events(sessions))
    assert {f"evt_{first}_1", f"evt_{second}_1"} <= before

    slow = sessions()
    slow.begin()
    _validate(slow, first)  # takes the lower audit id, left uncommitted
    slow.flush()
    with sessions.begin() as fast:
        _validate(fast, second)  # a higher id, committed first
    _poll(sessions)
    seen = set(_events(sessions)) - before
    assert seen == {f"evt_{second}_2"}
    frontier, gaps = _cursor(sessions)
    assert len(gaps) == 1 and int(next(iter(gaps))) < frontier

    slow.commit()
    slow.close()
    _poll(sessions)
    assert set(_events(sessions)) - before == {f"evt_{second}_2", f"evt_{first}_2"}
    assert _cursor(sessions)[1] == {}
    _poll(sessions)  # nothing twice
    events = _events(sessions)
    assert len(events) == len(set(events))


def test_a_rolled_back_id_is_skipped_after_the_grace_period(
    sessions: sessionmaker[Session],
) -> None:
    withdrawal = _withdrawal(sessions)
    _poll(sessions)
    doomed = sessions()
    doomed.begin()
    _validate(doomed, withdrawal)
    doomed.flush()
    later = _withdrawal(sessions)
    doomed.rollback()
    doomed.close()
    _poll(sessions)
    assert len(_cursor(sessions)[1]) == 1  # still waited for
    import time

    _poll(sessions, now=time.time() + 61)
    assert _cursor(sessions)[1] == {}
    assert f"evt_{later}_1" in _events(sessions)
    assert f"evt_{withdrawal}_2" not in _events(sessions)


def test_with_no_endpoint_enabled_the_cursor_moves_on_and_nothing_is_queued(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        session.execute(update(WebhookEndpoint).values(state="DISABLED"))
    quiet = _withdrawal(sessions)
    before = len(_events(sessions))
    _poll(sessions)
    frontier, gaps = _cursor(sessions)
    assert len(_events(sessions)) == before  # nothing fanned out
    with sessions() as session:
        newest = session.scalar(select(func.max(WithdrawalAudit.id)))
    assert frontier == newest and gaps == {}

    with sessions.begin() as session:
        session.execute(update(WebhookEndpoint).values(state="ENABLED"))
    heard = _withdrawal(sessions)
    _poll(sessions)
    events = set(_events(sessions))
    assert f"evt_{heard}_1" in events
    assert f"evt_{quiet}_1" not in events  # it happened while no endpoint listened
