"""The processor's readings of what the payout vault can pay, kept in `vault_funds` for the
gateway (which reads no chain) to compare a CSV batch's totals with. Written as a payout is
planned, at most every `EVERY_SECONDS` per token: a reading is a snapshot, and the gateway
says when it was taken."""

from __future__ import annotations

import time

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.models import VaultFunds
from withdrawal_shared.db.transitions import utcnow

EVERY_SECONDS = 1.0
UNCAPPED = 2**255
"""An allowance from here up is the contract's "no cap" (2**256 - 1)."""


class VaultFundsRecorder:
    def __init__(self, sessions: sessionmaker[Session], chain: str) -> None:
        self.sessions = sessions
        self.chain = chain
        self._written: dict[int, float] = {}

    def record(self, token_id: int, available: int, allowance: int) -> None:
        """Keep this reading (`available`: the vault's balance less what unsettled payouts
        take; `allowance`: what the outflow cap still lets pay), unless one was kept less
        than `EVERY_SECONDS` ago. Never raises for a concurrent writer of the same row."""
        now = time.monotonic()
        if now - self._written.get(token_id, -EVERY_SECONDS) < EVERY_SECONDS:
            return
        row = VaultFunds(
            chain=self.chain,
            token_id=token_id,
            available=max(available, 0),
            allowance=None if allowance >= UNCAPPED else allowance,
            observe_time=utcnow(),
        )
        try:
            with self.sessions.begin() as session:
                session.merge(row)
        except IntegrityError:  # another processor inserted it first: its reading stands
            return
        self._written[token_id] = now
