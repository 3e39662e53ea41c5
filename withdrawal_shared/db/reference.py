"""Reference data (chains, tokens, our own addresses) read from the database and cached.

These tables change rarely and are small; services keep a snapshot and refresh it every few
seconds (`REFERENCE_MAX_AGE_SECONDS`), so the request path never queries them: a change to
a row is seen by every service within that time and one read (the gateway's requests go on
with the due snapshot while one refresh reads it again; `ReferenceCache`). The payout kill switch
(`withdrawal_shared.db.pauses`) is deliberately not reference data and never cached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.models import Chain, SystemAddress, Token

REFERENCE_MAX_AGE_SECONDS = 5.0
"""How old a `ReferenceCache` snapshot may get before it is read again."""


@dataclass(frozen=True)
class ChainInfo:
    name: str
    chain_id: int
    native_symbol: str
    native_decimals: int
    confirmations: int
    enabled: bool


@dataclass(frozen=True)
class TokenInfo:
    id: int
    chain: str
    symbol: str
    contract_address: str | None
    decimals: int
    max_amount_base_units: int
    enabled: bool


@dataclass(frozen=True)
class ReferenceData:
    chains: dict[str, ChainInfo]
    tokens: dict[tuple[str, str], TokenInfo]  # (chain, symbol)
    tokens_by_id: dict[int, TokenInfo]
    system_addresses: frozenset[str]  # lowercase; includes token contracts

    @classmethod
    def load(cls, session: Session) -> ReferenceData:
        chains = {
            c.name: ChainInfo(
                c.name, c.chain_id, c.native_symbol, c.native_decimals, c.confirmations, c.enabled
            )
            for c in session.scalars(select(Chain))
        }
        tokens = [
            TokenInfo(
                t.id,
                t.chain,
                t.symbol,
                t.contract_address,
                t.decimals,
                t.max_amount_base_units,
                t.enabled,
            )
            for t in session.scalars(select(Token))
        ]
        own = {a.lower() for a in session.scalars(select(SystemAddress.address))}
        own |= {t.contract_address.lower() for t in tokens if t.contract_address}
        return cls(
            chains=chains,
            tokens={(t.chain, t.symbol): t for t in tokens},
            tokens_by_id={t.id: t for t in tokens},
            system_addresses=frozenset(own),
        )


class ReferenceCache:
    """A snapshot of ReferenceData refreshed when older than `max_age` seconds.

    `get` (for threads) reads it again, under a lock, once it is due. An event loop uses
    `current` and `claim_refresh` instead: a snapshot that is due but less than `max_age`
    seconds past due is still served while one refresh (`reload`, on a thread) reads it again,
    so the requests in flight never wait for that read. Past that, or after `invalidate`
    (an admin change this process made), nothing is served until `get` has read it again."""

    def __init__(
        self, sessions: sessionmaker[Session], max_age: float = REFERENCE_MAX_AGE_SECONDS
    ) -> None:
        self._sessions = sessions
        self._max_age = max_age
        self._lock = threading.Lock()
        self._data: ReferenceData | None = None
        self._loaded_at = 0.0
        self._refreshing = False  # a refresh claimed by `claim_refresh` is running

    def current(self) -> ReferenceData | None:
        """The snapshot while it is fresh or less than `max_age` seconds past due, else None
        (call `get` on a thread); never blocks."""
        data = self._data
        if data is not None and time.monotonic() - self._loaded_at < 2 * self._max_age:
            return data
        return None

    def claim_refresh(self) -> bool:
        """True once per due snapshot, for the caller to run `reload` on a thread; False
        while it is fresh or a claimed refresh is running. Never blocks."""
        if self._refreshing or time.monotonic() - self._loaded_at < self._max_age:
            return False
        self._refreshing = True
        return True

    def reload(self) -> ReferenceData:
        """Read the snapshot again now (the refresh `claim_refresh` handed out)."""
        try:
            with self._lock:
                return self._load()
        finally:
            self._refreshing = False

    def _load(self) -> ReferenceData:
        """Read the snapshot (the caller holds `_lock`)."""
        with self._sessions() as session:
            self._data = ReferenceData.load(session)
        self._loaded_at = time.monotonic()
        return self._data

    def get(self) -> ReferenceData:
        now = time.monotonic()
        data = self._data
        if data is not None and now - self._loaded_at < self._max_age:
            return data
        with self._lock:
            if self._data is None or time.monotonic() - self._loaded_at >= self._max_age:
                return self._load()
            return self._data

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0
