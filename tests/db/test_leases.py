"""Leases and their fence (`withdrawal_shared.db.leases`, `svc_monitor.leadership`) on MariaDB
and SQLite: one holder at a time, renewal keeps the token, a takeover raises it, an expired or
released lease is taken over, and a transaction of a former holder never commits once another
holder took the lease, including one already running when the takeover happened."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from svc_monitor.leadership import Leadership
from withdrawal_shared.db import leases
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.leases import LeaseLost
from withdrawal_shared.db.models import Lease, Partner
from withdrawal_shared.db.transitions import utcnow


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def name() -> str:
    return f"test:{secrets.token_hex(4)}"


def _partner(partner_id: str) -> Partner:
    """Any row will do as what a leader writes."""
    return Partner(id=partner_id, display_name="written", enabled=True, create_time=utcnow())


def _take(sessions: sessionmaker[Session], name: str, holder: str, at: dt.datetime) -> int | None:
    with sessions.begin() as session:
        return leases.take(session, name, holder, 5, at)


def test_one_holder_at_a_time_renewal_keeps_the_token_takeover_raises_it(
    sessions: sessionmaker[Session], name: str
) -> None:
    now = utcnow()
    assert _take(sessions, name, "a", now) == 1
    assert _take(sessions, name, "b", now + dt.timedelta(seconds=1)) is None  # a's runs
    assert _take(sessions, name, "a", now + dt.timedelta(seconds=2)) == 1  # renewed
    assert _take(sessions, name, "b", now + dt.timedelta(seconds=6)) is None  # renewed to 7
    assert _take(sessions, name, "b", now + dt.timedelta(seconds=7, milliseconds=1)) == 2
    with sessions() as session:
        holder = leases.holder_of(session, name)
    assert holder is not None and holder[:2] == ("b", 2)
    # a comes back after its lease was taken: it does not get it, and cannot act.
    assert _take(sessions, name, "a", now + dt.timedelta(seconds=8)) is None
    with pytest.raises(LeaseLost, match="held by b"), sessions.begin() as session:
        leases.verify(session, name, "a", 1)
    with sessions.begin() as session:
        leases.verify(session, name, "b", 2)


def test_a_released_lease_is_taken_at_once(sessions: sessionmaker[Session], name: str) -> None:
    now = utcnow()
    assert _take(sessions, name, "a", now) == 1
    with sessions.begin() as session:
        assert leases.release(session, name, "a", 1, now)
    assert _take(sessions, name, "b", now + dt.timedelta(milliseconds=1)) == 2


def test_a_fenced_transaction_of_a_former_leader_commits_nothing(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """Two Leaderships on one chain name, as two monitor replicas: the second takes the lease
    once the first's ran out; the first's next transaction rolls back at its commit."""
    chain = f"chain-{secrets.token_hex(3)}"
    first = Leadership(make_sessionmaker(engine), chain, 0.3, holder="first")
    second = Leadership(make_sessionmaker(engine), chain, 0.3, holder="second")
    fenced = make_sessionmaker(engine)
    first.install(fenced)
    assert first.hold() and not second.hold()
    partner = f"p-{secrets.token_hex(4)}"
    with fenced.begin() as session:  # the leader acts
        session.add(_partner(partner))
    time.sleep(0.35)  # the first is paused past its lease
    assert not first.may_act()
    assert second.hold()
    with pytest.raises(LeaseLost), fenced.begin() as session:
        session.add(_partner(partner + "-late"))
    assert first.lost == 1 and first.token is None
    with sessions() as session:
        ids = set(session.scalars(select(Partner.id).where(Partner.id.startswith(partner))))
    assert ids == {partner}


def test_a_takeover_waits_for_the_leaders_commit_or_fences_it(
    sessions: sessionmaker[Session], engine: Engine, db_url: str
) -> None:
    """MariaDB: a takeover that commits while a transaction of the old leader is running
    (its rows written, not committed) makes that transaction's commit fail at the fence."""
    if not db_url.startswith("mysql"):
        pytest.skip("SQLite runs one write transaction at a time (BEGIN IMMEDIATE)")
    chain = f"chain-{secrets.token_hex(3)}"
    old = Leadership(make_sessionmaker(engine), chain, 0.5, holder="old")
    fenced = make_sessionmaker(engine)
    old.install(fenced)
    assert old.hold()
    partner = f"p-{secrets.token_hex(4)}"
    took: list[float] = []

    def take_over() -> None:
        time.sleep(0.6)  # the old lease has run out
        with sessions.begin() as session:
            token = leases.take(session, f"monitor:{chain}", "new", 5, utcnow())
        assert token == 2
        took.append(time.monotonic())

    thief = threading.Thread(target=take_over)
    with pytest.raises(LeaseLost), fenced.begin() as session:
        session.add(_partner(partner))
        session.flush()
        thief.start()
        thief.join(10)  # the takeover commits while this transaction is open
        assert took
    with sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Partner).where(Partner.id == partner)
        )
        lease = session.get(Lease, f"monitor:{chain}")
    assert count == 0
    assert lease is not None and lease.holder == "new" and lease.token == 2
