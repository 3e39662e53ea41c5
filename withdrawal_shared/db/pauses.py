"""The payout kill switch: pause and resume payouts for everything, one chain, or one token
of a chain, transport-neutral (an admin API calls these and audits the before/after).

A pause stops payouts from being reserved: from the moment `pause` commits, no new payout
transaction (nonce and payout row) is created in its scope, so nothing in it is signed or
broadcast for the first time. What was reserved before is finished (see svc_processor), and
what is already signed is still followed: the same bytes re-sent, stuck transactions replaced
at their nonce, nonces released, so that no nonce is left jammed.

The ordering: the `*` row of `payout_pauses` always exists (migration 0011 creates it). Every
reservation reads the pauses that apply to it after locking that row shared
(`payout_pause(..., lock=True)`: `SELECT ... LOCK IN SHARE MODE` on MariaDB/MySQL), in the
same transaction that reserves the nonce; `pause` and `resume` lock it exclusively
(`SELECT ... FOR UPDATE`) before writing. So on MariaDB a reservation either commits before
the pause does (and may still be signed and broadcast), or waits for it and sees it. SQLite
serialises every write transaction anyway (`BEGIN IMMEDIATE`). The flag is never read through
the reference-data cache (`reference.py`).

Disabling the chain's payout vault (`payout_vaults.enabled = false`) is NOT a pause: the
processor then pays one plain ERC-20 transfer per withdrawal from the hot wallet. Nothing here
touches the vault row.

Every function takes a `Session` inside a transaction the caller opens and commits (so that
the caller's audit row can commit with the change).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import Chain, PayoutPause, Token
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import FieldViolation, invalid_argument

EVERYTHING = "*"
"""The scope key of the pause of everything, and the key of the lock row."""

REASON_MAX = 256
ACTOR_MAX = 64


@dataclass(frozen=True)
class PauseScope:
    """What a pause covers: everything (no chain), a chain (no token), or a chain's token
    (its symbol, as in `tokens.symbol`)."""

    chain: str | None = None
    token: str | None = None

    @property
    def key(self) -> str:
        """`*`, `<chain>` or `<chain>/<symbol>`: the row's `scope`."""
        if self.chain is None:
            return EVERYTHING
        return self.chain if self.token is None else f"{self.chain}/{self.token}"

    @classmethod
    def parse(cls, key: str) -> PauseScope:
        """The scope of a key written by `key`; INVALID_ARGUMENT when it is not one."""
        if key == EVERYTHING:
            return cls()
        chain, _, token = key.partition("/")
        if not chain or chain == EVERYTHING or (_ and not token) or "/" in token:
            raise invalid_argument(
                [FieldViolation("scope", "must be '*', '<chain>' or '<chain>/<token symbol>'")]
            )
        return cls(chain, token or None)


@dataclass(frozen=True)
class PauseState:
    """One scope's pause as stored (or as it would be: never paused)."""

    scope: str
    chain: str | None
    token: str | None  # symbol
    paused: bool
    reason: str
    actor: str
    update_time: dt.datetime | None  # None: never paused


@dataclass(frozen=True)
class PauseChange:
    """What `pause` or `resume` did: the scope before and after; `changed` False when the
    call found it already so (idempotent: nothing was written)."""

    before: PauseState
    after: PauseState

    @property
    def changed(self) -> bool:
        return self.before != self.after


def pause(session: Session, scope: PauseScope, *, reason: str, actor: str) -> PauseChange:
    """Pause payouts in `scope`. Already paused: nothing changes (the first reason and actor
    stay). INVALID_ARGUMENT for an unknown chain or token, or an empty reason or actor."""
    _require_text("reason", reason, REASON_MAX)
    _require_text("actor", actor, ACTOR_MAX)
    return _set(session, scope, paused=True, reason=reason, actor=actor)


def resume(session: Session, scope: PauseScope, *, actor: str) -> PauseChange:
    """Resume payouts in `scope` (the withdrawals held `PAUSED` in it resume by themselves,
    unless a wider scope is still paused). Not paused: nothing changes."""
    _require_text("actor", actor, ACTOR_MAX)
    return _set(session, scope, paused=False, reason="", actor=actor)


def list_pauses(session: Session, *, include_resumed: bool = False) -> list[PauseState]:
    """The paused scopes (with `include_resumed`, also the scopes paused once and resumed
    since, and the never-paused `*` row), by scope key."""
    query = select(PayoutPause, Token.symbol).outerjoin(Token, Token.id == PayoutPause.token_id)
    if not include_resumed:
        query = query.where(PayoutPause.paused.is_(True))
    return [
        _state(row, symbol) for row, symbol in session.execute(query.order_by(PayoutPause.scope))
    ]


def payout_pause(
    session: Session, chain: str, token_ids: Collection[int] = (), *, lock: bool
) -> PauseState | None:
    """The pause that forbids a new payout on `chain` in these tokens (everything, the chain,
    or one of the tokens), or None. With `lock`, the `*` row is first locked shared until the
    transaction ends, so that a pause committing meanwhile is ordered before or after this
    transaction (call it before any other lock of the transaction: the order every reserver
    and signer keeps)."""
    if lock:
        session.execute(
            select(PayoutPause.scope)
            .where(PayoutPause.scope == EVERYTHING)
            .with_for_update(read=True)
        ).all()
    token_clause: ColumnElement[bool] = PayoutPause.token_id.is_(None)
    if token_ids:
        token_clause = or_(token_clause, PayoutPause.token_id.in_(sorted(set(token_ids))))
    row = session.execute(
        select(PayoutPause, Token.symbol)
        .outerjoin(Token, Token.id == PayoutPause.token_id)
        .where(
            PayoutPause.paused.is_(True),
            or_(
                PayoutPause.scope == EVERYTHING,
                (PayoutPause.chain == chain) & token_clause,
            ),
        )
        .order_by(PayoutPause.scope)
        .limit(1)
    ).first()
    return None if row is None else _state(row[0], row[1])


# -- internals ----------------------------------------------------------------------------


def _require_text(name: str, value: str, limit: int) -> None:
    if not value.strip():
        raise invalid_argument([FieldViolation(name, "is required")])
    if len(value) > limit:
        raise invalid_argument([FieldViolation(name, f"must be at most {limit} characters")])


def _set(
    session: Session, scope: PauseScope, *, paused: bool, reason: str, actor: str
) -> PauseChange:
    lock = session.scalars(
        select(PayoutPause).where(PayoutPause.scope == EVERYTHING).with_for_update()
    ).one_or_none()
    if lock is None:  # the migration's row was deleted: put it back (this is the writer)
        lock = _never_paused_row(EVERYTHING, None, None)
        session.add(lock)
        session.flush()
    chain, token_id = _resolve(session, scope)
    key = scope.key
    row = lock if key == EVERYTHING else session.get(PayoutPause, key, with_for_update=True)
    before = (
        _state(row, scope.token)
        if row is not None
        else PauseState(key, chain, scope.token, False, "", "", None)
    )
    if before.paused == paused:
        return PauseChange(before, before)
    if row is None:
        row = _never_paused_row(key, chain, token_id)
        session.add(row)
    row.paused = paused
    row.reason = reason
    row.actor = actor
    row.update_time = utcnow()
    session.flush()
    return PauseChange(before, _state(row, scope.token))


def _never_paused_row(key: str, chain: str | None, token_id: int | None) -> PayoutPause:
    return PayoutPause(
        scope=key,
        chain=chain,
        token_id=token_id,
        paused=False,
        reason="",
        actor="",
        update_time=utcnow(),
    )


def _resolve(session: Session, scope: PauseScope) -> tuple[str | None, int | None]:
    """(chain, token id) of the scope; INVALID_ARGUMENT when it names an unknown one."""
    if scope.chain is None:
        if scope.token is not None:
            raise invalid_argument([FieldViolation("scope.chain", "is required with a token")])
        return None, None
    if session.get(Chain, scope.chain) is None:
        raise invalid_argument(
            [FieldViolation("scope.chain", f"{scope.chain!r} is not a configured chain")]
        )
    if scope.token is None:
        return scope.chain, None
    token_id = session.scalar(
        select(Token.id).where(Token.chain == scope.chain, Token.symbol == scope.token)
    )
    if token_id is None:
        raise invalid_argument(
            [
                FieldViolation(
                    "scope.token", f"{scope.token!r} is not a token of chain {scope.chain!r}"
                )
            ]
        )
    return scope.chain, token_id


def _state(row: PayoutPause, symbol: str | None) -> PauseState:
    return PauseState(
        scope=row.scope,
        chain=row.chain,
        token=symbol,
        paused=row.paused,
        reason=row.reason,
        actor=row.actor,
        update_time=row.update_time,
    )
