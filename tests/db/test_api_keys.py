"""The API-key lifecycle core on MariaDB and SQLite: create with scopes, list, revoke
(idempotent), verify, record last use; and migration 0009 granting existing keys their
scopes."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tests.support.databases import mariadb_database, sqlite_database
from withdrawal_shared.db.api_keys import (
    UnknownPartnerError,
    create_api_key,
    ensure_partner,
    list_api_keys,
    record_key_use,
    revoke_api_key,
    verify_token,
)
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.models import Partner
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=2)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def partner(sessions: sessionmaker[Session]) -> str:
    partner_id = f"keys-{secrets.token_hex(3)}"
    with sessions.begin() as session:
        ensure_partner(session, partner_id)
    return partner_id


def test_create_returns_the_token_once_and_stores_only_its_hash(
    sessions: sessionmaker[Session], partner: str
) -> None:
    with sessions.begin() as session:
        created = create_api_key(session, partner, [Scope.WITHDRAWALS_READ])
    assert created.token.startswith(created.key.prefix + "_")
    assert created.key.scopes == frozenset({Scope.WITHDRAWALS_READ})
    with sessions() as session:
        stored = session.execute(text("SELECT * FROM api_keys")).mappings().all()
        verified = verify_token(session, created.token)
    assert all(created.token not in str(dict(row)) for row in stored)
    assert verified is not None
    assert (verified.partner_id, verified.scopes) == (partner, frozenset({Scope.WITHDRAWALS_READ}))
    assert verified.key_rate_per_second is None


def test_create_refuses_unknown_partners_empty_scopes_and_bad_limits(
    sessions: sessionmaker[Session], partner: str
) -> None:
    with sessions() as session:
        with pytest.raises(UnknownPartnerError):
            create_api_key(session, "no-such-partner")
        with pytest.raises(ValueError, match="at least one scope"):
            create_api_key(session, partner, [])
        with pytest.raises(ValueError, match="must be at least 1"):
            create_api_key(session, partner, rate_limit_per_second=0)
        with pytest.raises(ValueError, match="needs rate_limit_per_second"):
            create_api_key(session, partner, rate_limit_burst=5)
        with pytest.raises(ValueError):
            create_api_key(session, partner, ["withdrawals:delete"])  # type: ignore[list-item]


def test_list_revoke_and_limits(sessions: sessionmaker[Session], partner: str) -> None:
    with sessions.begin() as session:
        first = create_api_key(session, partner)
        second = create_api_key(
            session, partner, Scope, rate_limit_per_second=5, rate_limit_burst=10
        )
        partner_row = session.get(Partner, partner)
        assert partner_row is not None
        partner_row.rate_limit_per_second = 50
    with sessions() as session:
        keys = list_api_keys(session, partner)
        assert {k.prefix for k in keys} == {first.key.prefix, second.key.prefix}
        assert {k.prefix: k.scopes for k in keys}[first.key.prefix] == DEFAULT_SCOPES
        assert {k.prefix: k.scopes for k in keys}[second.key.prefix] == frozenset(Scope)
        verified = verify_token(session, second.token)
        assert verified is not None
        assert (verified.key_rate_per_second, verified.key_burst) == (5, 10)
        assert verified.partner_rate_per_second == 50
        assert list_api_keys(session, "someone-else") == []
    with sessions.begin() as session:
        revoked = revoke_api_key(session, partner, first.key.prefix)
        assert revoked is not None and revoked.revoke_time is not None
        assert revoke_api_key(session, "someone-else", second.key.prefix) is None
    with sessions.begin() as session:
        again = revoke_api_key(session, partner, first.key.prefix)  # idempotent
        assert again is not None and again.revoke_time == revoked.revoke_time
    with sessions() as session:
        assert verify_token(session, first.token) is None
        assert verify_token(session, second.token) is not None
        active = list_api_keys(session, partner, include_revoked=False)
        assert [k.prefix for k in active] == [second.key.prefix]


def test_record_key_use_only_moves_forward(sessions: sessionmaker[Session], partner: str) -> None:
    with sessions.begin() as session:
        created = create_api_key(session, partner)
    later = dt.datetime(2030, 1, 2, 3, 4, 5)
    earlier = later - dt.timedelta(minutes=5)
    with sessions.begin() as session:
        record_key_use(session, [created.key.prefix], later)
    with sessions.begin() as session:
        record_key_use(session, [created.key.prefix], earlier)
        record_key_use(session, [], earlier)
    with sessions() as session:
        (key,) = list_api_keys(session, partner)
    assert key.last_use_time == later


@pytest.fixture(params=["mariadb", "sqlite"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "mariadb":
        with mariadb_database(migrate=False) as url:
            yield url
    else:
        with sqlite_database(tmp_path, migrate=False) as url:
            yield url


def test_migration_grants_existing_keys_read_and_create(unmigrated: str) -> None:
    upgrade(unmigrated, "0008")
    engine = make_engine(unmigrated, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO partners (id, display_name, enabled, create_time) "
                    "VALUES ('old', 'old', 1, '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_keys (prefix, partner_id, token_sha256, create_time) "
                    "VALUES ('awk_0000beef', 'old', :sha, '2026-01-01 00:00:00')"
                ),
                {"sha": "0" * 64},
            )
        upgrade(unmigrated)
        with make_sessionmaker(engine)() as session:
            (key,) = list_api_keys(session, "old")
        assert key.scopes == frozenset({Scope.WITHDRAWALS_READ, Scope.WITHDRAWALS_CREATE})
        assert key.last_use_time is None and key.rate_limit_per_second is None
    finally:
        engine.dispose()
