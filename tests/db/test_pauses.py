"""The payout kill switch and the runtime token settings (`withdrawal_shared.db.pauses`,
`withdrawal_shared.db.token_settings`) on MariaDB and SQLite: idempotent before/after, the
scopes a pause covers, refusals of unknown scopes, and (MariaDB) the lock that orders a pause
against a reservation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token
from withdrawal_shared.db.pauses import (
    EVERYTHING,
    PauseScope,
    list_pauses,
    pause,
    payout_pause,
    resume,
)
from withdrawal_shared.db.token_settings import set_token_enabled, set_token_max_amount
from withdrawal_shared.errors import ApiError, Code

CHAIN = "polygon"


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    made = make_sessionmaker(engine)
    yield made
    with made.begin() as session:  # leave nothing paused for the next test
        for state in list_pauses(session):
            resume(session, PauseScope.parse(state.scope), actor="test-cleanup")


def _usdc(sessions: sessionmaker[Session]) -> Token:
    with sessions() as session:
        token = session.scalars(select(Token).where(Token.chain == CHAIN)).first()
        assert token is not None
        return token


def test_the_lock_row_exists_and_nothing_is_paused_after_migration(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        assert list_pauses(session) == []
        everything = list_pauses(session, include_resumed=True)
        assert [s.scope for s in everything] == [EVERYTHING]
        assert not everything[0].paused
        assert payout_pause(session, CHAIN, lock=False) is None


def test_pause_and_resume_are_idempotent_and_return_before_and_after(
    sessions: sessionmaker[Session],
) -> None:
    token = _usdc(sessions)
    scope = PauseScope(CHAIN, token.symbol)
    with sessions.begin() as session:
        first = pause(session, scope, reason="issuer incident", actor="alice")
    assert first.changed
    assert not first.before.paused and first.before.update_time is None
    assert first.after.paused and first.after.reason == "issuer incident"
    assert first.after.actor == "alice" and first.after.token == token.symbol
    assert first.after.scope == f"{CHAIN}/{token.symbol}"
    with sessions.begin() as session:
        again = pause(session, scope, reason="another reason", actor="bob")
    assert not again.changed
    assert again.after == first.after  # the first reason and actor stay
    with sessions() as session:
        assert [s.scope for s in list_pauses(session)] == [scope.key]
    with sessions.begin() as session:
        lifted = resume(session, scope, actor="carol")
    assert lifted.changed and lifted.before == first.after
    assert not lifted.after.paused and lifted.after.actor == "carol"
    with sessions.begin() as session:
        assert not resume(session, scope, actor="carol").changed
    with sessions() as session:
        assert list_pauses(session) == []
        assert scope.key in {s.scope for s in list_pauses(session, include_resumed=True)}


@pytest.mark.parametrize(
    ("scope", "covers_token", "covers_other_token", "covers_other_chain"),
    [
        (PauseScope(), True, True, True),
        (PauseScope(CHAIN), True, True, False),
        (PauseScope(CHAIN, "TOKEN"), True, False, False),
    ],
    ids=["everything", "chain", "token"],
)
def test_what_a_pause_covers(
    sessions: sessionmaker[Session],
    scope: PauseScope,
    covers_token: bool,
    covers_other_token: bool,
    covers_other_chain: bool,
) -> None:
    token = _usdc(sessions)
    if scope.token is not None:
        scope = PauseScope(CHAIN, token.symbol)
    with sessions.begin() as session:
        pause(session, scope, reason="test", actor="alice")
    with sessions() as session:
        for lock in (False, True):
            found = payout_pause(session, CHAIN, [token.id], lock=lock)
            assert (found is not None) == covers_token
            assert found is None or found.scope == scope.key
            assert (payout_pause(session, CHAIN, [token.id + 1000], lock=lock) is not None) == (
                covers_other_token
            )
            assert (payout_pause(session, "elsewhere", [], lock=lock) is not None) == (
                covers_other_chain
            )


@pytest.mark.parametrize(
    ("scope", "field"),
    [
        (PauseScope("no-such-chain"), "scope.chain"),
        (PauseScope(CHAIN, "NOPE"), "scope.token"),
        (PauseScope(None, "USDC"), "scope.chain"),
    ],
)
def test_an_unknown_scope_is_refused_and_changes_nothing(
    sessions: sessionmaker[Session], scope: PauseScope, field: str
) -> None:
    with pytest.raises(ApiError) as refused, sessions.begin() as session:
        pause(session, scope, reason="test", actor="alice")
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert [v.field for v in refused.value.field_violations] == [field]
    with sessions() as session:
        assert list_pauses(session) == []


def test_reason_and_actor_are_required(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ApiError), sessions.begin() as session:
        pause(session, PauseScope(), reason=" ", actor="alice")
    with pytest.raises(ApiError), sessions.begin() as session:
        pause(session, PauseScope(), reason="why", actor="")


def test_scope_keys_round_trip() -> None:
    for scope in (PauseScope(), PauseScope("polygon"), PauseScope("polygon", "USDC")):
        assert PauseScope.parse(scope.key) == scope
    for bad in ("", "polygon/", "/USDC", "a/b/c", "*/USDC"):
        with pytest.raises(ApiError):
            PauseScope.parse(bad)


def test_token_settings_return_before_and_after(sessions: sessionmaker[Session]) -> None:
    token = _usdc(sessions)
    try:
        with sessions.begin() as session:
            off = set_token_enabled(session, CHAIN, token.symbol, False)
        assert off.changed and off.before.enabled and not off.after.enabled
        with sessions.begin() as session:
            assert not set_token_enabled(session, CHAIN, token.symbol, False).changed
        with sessions.begin() as session:
            limit = set_token_max_amount(session, CHAIN, token.symbol, 123)
        assert limit.before.max_amount_base_units == token.max_amount_base_units
        assert limit.after.max_amount_base_units == 123
        with sessions() as session:
            stored = session.get(Token, token.id)
            assert stored is not None
            assert (stored.enabled, stored.max_amount_base_units) == (False, 123)
        for bad in (0, -1, 10**65):
            with pytest.raises(ApiError), sessions.begin() as session:
                set_token_max_amount(session, CHAIN, token.symbol, bad)
        with pytest.raises(ApiError), sessions.begin() as session:
            set_token_enabled(session, CHAIN, "NOPE", True)
    finally:
        with sessions.begin() as session:
            set_token_enabled(session, CHAIN, token.symbol, token.enabled)
            set_token_max_amount(session, CHAIN, token.symbol, token.max_amount_base_units)


def test_a_pause_waits_for_a_reservation_holding_the_lock_and_the_next_one_sees_it(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    """MariaDB: a transaction that read the pauses under the lock (as a reservation does)
    makes a pause wait until it commits; a reservation starting while the pause is
    uncommitted waits for it and then sees it."""
    if not db_url.startswith("mysql"):
        pytest.skip("SQLite serialises every write transaction (BEGIN IMMEDIATE)")
    token = _usdc(sessions)
    paused_at: list[float] = []

    def pause_now() -> None:
        with sessions.begin() as session:
            pause(session, PauseScope(CHAIN), reason="race", actor="alice")
            time.sleep(0.5)  # uncommitted for a while: a reservation must wait for it
        paused_at.append(time.monotonic())

    with sessions.begin() as reservation:
        assert payout_pause(reservation, CHAIN, [token.id], lock=True) is None
        pauser = threading.Thread(target=pause_now)
        pauser.start()
        time.sleep(0.5)
        assert paused_at == []  # the pause waits for the reservation's shared lock
        committed_reservation = time.monotonic()
    time.sleep(0.1)  # the pause now holds the lock, uncommitted
    with sessions.begin() as next_reservation:
        seen = payout_pause(next_reservation, CHAIN, [token.id], lock=True)
        after_wait = time.monotonic()
    pauser.join(10)
    assert paused_at and paused_at[0] > committed_reservation
    assert seen is not None and seen.scope == CHAIN
    assert after_wait >= paused_at[0] - 0.05
