"""The monitor's payout figures, refreshed every `INTERVAL_SECONDS` (never per scrape).

- `aws_payouts_in_flight{state}` and `aws_payout_oldest_in_flight_seconds{state}`: payout
  transactions RESERVED, SIGNED, BROADCAST or MINED on its chain, and the oldest one's age
  (one grouped query on the `(state, update_time)` index).
- `aws_chain_head_block`: the head block.
- Per token, for each payout settled at the depth since the last refresh (CONFIRMED or
  REVERTED; found by `update_time` on the same index, each counted once): its gas used, its
  fee, one settlement by outcome, and the seconds from its creation to its settlement
  (`aws_payout_confirmation_seconds`). A payout's token is its withdrawals' (through
  `payout_items`), or the token contract it called; a nonce release's is `none`.

A failed refresh is logged and keeps the last values; it never stops the monitor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Token, Withdrawal
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.metrics import (
    CHAIN_HEAD_BLOCK,
    PAYOUT_CONFIRMATION_SECONDS,
    PAYOUT_FEES_WEI,
    PAYOUT_GAS_USED,
    PAYOUT_OLDEST_IN_FLIGHT_SECONDS,
    PAYOUTS_IN_FLIGHT,
    PAYOUTS_SETTLED,
)
from withdrawal_shared.states import PayoutState

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0
IN_FLIGHT = (
    PayoutState.RESERVED.value,
    PayoutState.SIGNED.value,
    PayoutState.BROADCAST.value,
    PayoutState.MINED.value,
)
SETTLED = (PayoutState.CONFIRMED.value, PayoutState.REVERTED.value)
NO_TOKEN = "none"  # noqa: S105 - the token label of a nonce release, not a secret
OVERLAP = dt.timedelta(seconds=30)
"""Settled rows are looked for from this long before the last refresh (clock and commit skew);
ids already counted are skipped."""


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


class MonitorGauges:
    def __init__(self, sessions: sessionmaker[Session], w3: Web3, chain: str) -> None:
        self._sessions = sessions
        self._w3 = w3
        self._chain = chain
        self._since = utcnow()
        self._counted: dict[str, dt.datetime] = {}
        self.refreshes = 0
        for gauge in (PAYOUTS_IN_FLIGHT, PAYOUT_OLDEST_IN_FLIGHT_SECONDS):
            gauge.zero({"state": state} for state in IN_FLIGHT)

    async def run(self) -> None:
        """Refresh every `INTERVAL_SECONDS` until cancelled."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.zero_tokens)
        while True:
            try:
                await loop.run_in_executor(None, self.refresh)
                self.refreshes += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last values; the next round tries again
                log.warning("metrics refresh failed", extra={"error": str(exc)})
            await asyncio.sleep(INTERVAL_SECONDS)

    def zero_tokens(self) -> None:
        """Every token's gas, fee and settlement series at zero, before its first payout."""
        try:
            with self._sessions() as session:
                symbols = session.scalars(
                    select(Token.symbol).where(Token.chain == self._chain)
                ).all()
        except Exception as exc:
            log.warning("metrics: cannot read the tokens", extra={"error": str(exc)})
            return
        for symbol in [*symbols, NO_TOKEN]:
            labels = {"token": symbol}
            PAYOUT_GAS_USED.add(0, labels)
            PAYOUT_FEES_WEI.add(0, labels)
            for outcome in SETTLED:
                PAYOUTS_SETTLED.add(0, {**labels, "outcome": outcome})

    def refresh(self) -> None:
        now = utcnow()
        pt = PayoutTransaction
        since = self._since - OVERLAP
        with self._sessions() as session:
            in_flight = session.execute(
                select(pt.state, func.count(), func.min(pt.create_time))
                .where(pt.chain == self._chain, pt.state.in_(IN_FLIGHT))
                .group_by(pt.state)
            ).all()
            settled = session.execute(
                select(
                    pt.id,
                    pt.state,
                    pt.kind,
                    pt.to_address,
                    pt.gas_used,
                    pt.fee_wei,
                    pt.create_time,
                    pt.update_time,
                ).where(pt.chain == self._chain, pt.state.in_(SETTLED), pt.update_time >= since)
            ).all()
            fresh = [row for row in settled if row.id not in self._counted]
            by_contract = {
                (address or "").lower(): symbol
                for symbol, address in session.execute(
                    select(Token.symbol, Token.contract_address).where(Token.chain == self._chain)
                ).all()
            }
            by_payout: dict[str, str] = {}
            vault_ids = [row.id for row in fresh if row.kind == "vault"]
            if vault_ids:
                for payout_id, symbol in session.execute(
                    select(PayoutItem.payout_tx_id, Token.symbol)
                    .join(Withdrawal, Withdrawal.id == PayoutItem.withdrawal_id)
                    .join(Token, Token.id == Withdrawal.token_id)
                    .where(PayoutItem.payout_tx_id.in_(vault_ids))
                ).all():
                    by_payout[payout_id] = symbol
        counts = {state: (0, 0.0) for state in IN_FLIGHT}
        for state, count, oldest in in_flight:
            age = (now - _naive(oldest)).total_seconds() if oldest is not None else 0.0
            counts[state] = (int(count), max(0.0, age))
        PAYOUTS_IN_FLIGHT.set_many(({"state": s}, c) for s, (c, _a) in counts.items())
        PAYOUT_OLDEST_IN_FLIGHT_SECONDS.set_many(({"state": s}, a) for s, (_c, a) in counts.items())
        for row in fresh:
            if row.kind == "vault":
                symbol = by_payout.get(row.id, NO_TOKEN)
            elif row.kind == "transfer":
                symbol = by_contract.get((row.to_address or "").lower(), NO_TOKEN)
            else:
                symbol = NO_TOKEN
            labels = {"token": symbol}
            PAYOUT_GAS_USED.add(int(row.gas_used or 0), labels)
            PAYOUT_FEES_WEI.add(int(row.fee_wei or 0), labels)
            PAYOUTS_SETTLED.add(1, {**labels, "outcome": row.state})
            seconds = (_naive(row.update_time) - _naive(row.create_time)).total_seconds()
            PAYOUT_CONFIRMATION_SECONDS.record(max(0.0, seconds), labels)
            self._counted[row.id] = _naive(row.update_time)
        cutoff = since - OVERLAP
        self._counted = {k: v for k, v in self._counted.items() if v >= cutoff}
        self._since = now
        CHAIN_HEAD_BLOCK.set({"chain": self._chain}, int(self._w3.eth.block_number))


__all__ = ["INTERVAL_SECONDS", "MonitorGauges"]
