"""The reference data snapshot (`withdrawal_shared.db.reference.ReferenceCache`) on a migrated
database: a due snapshot is still served while one refresh reads it again, a change made
elsewhere is served once that refresh ran, and a snapshot too old or invalidated is not
served at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tests.support.databases import sqlite_database
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token
from withdrawal_shared.db.reference import ReferenceCache

MAX_AGE = 0.3


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[tuple[ReferenceCache, sessionmaker[Session]]]:
    with sqlite_database(tmp_path) as url:
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        yield ReferenceCache(sessions, max_age=MAX_AGE), sessions
        engine.dispose()


def _usdc_max(cache: ReferenceCache) -> int:
    data = cache.current()
    assert data is not None
    return data.tokens[("polygon", "USDC")].max_amount_base_units


def test_a_due_snapshot_is_served_while_one_refresh_reads_it_again(
    cache: tuple[ReferenceCache, sessionmaker[Session]],
) -> None:
    reference, sessions = cache
    assert reference.current() is None  # nothing read yet: callers must `get`
    before = reference.get().tokens[("polygon", "USDC")].max_amount_base_units
    assert reference.claim_refresh() is False  # fresh
    with sessions.begin() as session:
        session.execute(
            update(Token).where(Token.symbol == "USDC").values(max_amount_base_units=before - 1)
        )
    time.sleep(MAX_AGE + 0.05)
    assert _usdc_max(reference) == before  # due, but still served
    assert reference.claim_refresh() is True  # one refresh, once
    assert reference.claim_refresh() is False
    reference.reload()
    assert _usdc_max(reference) == before - 1
    assert reference.claim_refresh() is False  # fresh again


def test_a_snapshot_too_old_or_invalidated_is_not_served(
    cache: tuple[ReferenceCache, sessionmaker[Session]],
) -> None:
    reference, _ = cache
    reference.get()
    time.sleep(2 * MAX_AGE + 0.05)
    assert reference.current() is None
    reference.get()
    assert reference.current() is not None
    reference.invalidate()
    assert reference.current() is None


def test_a_failed_refresh_can_be_claimed_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'withdrawals.sqlite3'}")
    reference = ReferenceCache(make_sessionmaker(engine), max_age=MAX_AGE)
    assert reference.claim_refresh() is True  # never read: due
    with pytest.raises(OperationalError):
        reference.reload()
    assert reference.claim_refresh() is True  # the failed one no longer counts as running
    engine.dispose()
