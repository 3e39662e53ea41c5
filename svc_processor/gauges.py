"""The processor's observable gauges, refreshed every `INTERVAL_SECONDS` (never per scrape).

What the processor owns, it measures: the task queue (per stream and consumer group: length,
entries not yet delivered, pending entries and the oldest one's age; the dead-letter stream's
length), the withdrawals in each non-terminal state and how long the least recently changed
one has waited there (one grouped query on the `(state, priority, update_time)` index), and
per hot wallet of its chain the gas balance, token balances and the distance between the
nonce it will use next and the chain's, with the payout vault's token balances, and its chain's
open treasury Safe transactions (by purpose and state: how many, the oldest's age since
creation, and those sent again after an attempt that did not execute them). The values go to
the `GaugeValues` of `withdrawal_shared.metrics`, which a scrape only reads.

A failed refresh is logged and keeps the last values; it never stops the processor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from svc_processor.chain_reads import ChainReads
from withdrawal_shared.db.models import HotWallet, PayoutVault, SafeTransaction, Token, Withdrawal
from withdrawal_shared.db.treasury_changes import LAST_ATTEMPT_PREFIX, SafePurpose, SafeTxState
from withdrawal_shared.metrics import (
    HOT_WALLET_GAS_BALANCE_WEI,
    HOT_WALLET_NONCE_GAP,
    HOT_WALLET_TOKEN_BALANCE,
    QUEUE_LAG,
    QUEUE_OLDEST_PENDING_AGE_SECONDS,
    QUEUE_PENDING,
    QUEUE_STREAM_LENGTH,
    SAFE_TRANSACTION_OLDEST_OPEN_SECONDS,
    SAFE_TRANSACTIONS_OPEN,
    SAFE_TRANSACTIONS_RETRYING,
    VAULT_TOKEN_BALANCE,
    WITHDRAWAL_OLDEST_IN_STATE_SECONDS,
    WITHDRAWALS_IN_STATE,
)
from withdrawal_shared.states import TERMINAL, State

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0
OPEN_STATES = tuple(s.value for s in State if s not in TERMINAL)
OPEN_SAFE_STATES = (
    SafeTxState.PENDING.value,
    SafeTxState.SIGNED.value,
    SafeTxState.EXECUTING.value,
)
SAFE_PURPOSES = tuple(p.value for p in SafePurpose)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _entry_age_seconds(entry_id: str, now: float) -> float:
    """Seconds since a stream entry id's millisecond timestamp (`1700000000000-0`)."""
    millis = entry_id.split("-", 1)[0]
    return max(0.0, now - int(millis) / 1000.0) if millis.isdigit() else 0.0


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class ProcessorGauges:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        redis: aioredis.Redis,
        task_streams: Sequence[str],
        dead_letters: str,
        group: str,
        reads: ChainReads,
        chain: str,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._streams = list(task_streams)
        self._dead_letters = dead_letters
        self._group = group
        self._reads = reads
        self._chain = chain
        self.refreshes = 0
        # Every series known now exists at zero before the first read.
        QUEUE_STREAM_LENGTH.zero({"stream": s} for s in [*self._streams, dead_letters])
        for gauge in (QUEUE_LAG, QUEUE_PENDING, QUEUE_OLDEST_PENDING_AGE_SECONDS):
            gauge.zero({"stream": s, "group": group} for s in self._streams)
        for gauge in (WITHDRAWALS_IN_STATE, WITHDRAWAL_OLDEST_IN_STATE_SECONDS):
            gauge.zero({"state": state} for state in OPEN_STATES)
        for gauge in (SAFE_TRANSACTIONS_OPEN, SAFE_TRANSACTION_OLDEST_OPEN_SECONDS):
            gauge.zero(
                {"purpose": purpose, "state": state}
                for purpose in SAFE_PURPOSES
                for state in OPEN_SAFE_STATES
            )
        SAFE_TRANSACTIONS_RETRYING.zero({"purpose": purpose} for purpose in SAFE_PURPOSES)

    async def run(self) -> None:
        """Refresh every `INTERVAL_SECONDS` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.refresh_queue()
                await loop.run_in_executor(None, self.refresh_database_and_chain)
                self.refreshes += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last values; the next round tries again
                log.warning("metrics refresh failed", extra={"error": str(exc)})
            await asyncio.sleep(INTERVAL_SECONDS)

    async def refresh_queue(self) -> None:
        now = time.time()
        client = self._redis
        for stream in [*self._streams, self._dead_letters]:
            QUEUE_STREAM_LENGTH.set({"stream": stream}, await client.xlen(stream))
        for stream in self._streams:
            labels = {"stream": stream, "group": self._group}
            groups = await client.xinfo_groups(stream) if await client.exists(stream) else []
            for info in groups:
                if _text(info.get("name")) != self._group:
                    continue
                lag = info.get("lag")
                if lag is not None:  # None: Redis cannot tell (entries were deleted)
                    QUEUE_LAG.set(labels, int(lag))
            summary = await client.xpending(stream, self._group) if groups else None
            pending = int(summary["pending"]) if summary else 0
            QUEUE_PENDING.set(labels, pending)
            oldest = _text(summary.get("min")) if summary and pending else ""
            QUEUE_OLDEST_PENDING_AGE_SECONDS.set(
                labels, _entry_age_seconds(oldest, now) if oldest else 0.0
            )

    def refresh_database_and_chain(self) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._sessions() as session:
            rows = session.execute(
                select(Withdrawal.state, func.count(), func.min(Withdrawal.update_time))
                .where(Withdrawal.state.in_(OPEN_STATES))
                .group_by(Withdrawal.state)
            ).all()
            wallets = session.execute(
                select(HotWallet.address, HotWallet.next_nonce).where(
                    HotWallet.chain == self._chain, HotWallet.enabled.is_(True)
                )
            ).all()
            tokens = session.execute(
                select(Token.symbol, Token.contract_address).where(
                    Token.chain == self._chain, Token.enabled.is_(True)
                )
            ).all()
            vault = session.scalar(
                select(PayoutVault.address).where(PayoutVault.chain == self._chain)
            )
            retrying = SafeTransaction.failure_reason.startswith(LAST_ATTEMPT_PREFIX)
            safe_rows = session.execute(
                select(
                    SafeTransaction.purpose,
                    SafeTransaction.state,
                    func.count(),
                    func.min(SafeTransaction.create_time),
                    func.sum(case((retrying, 1), else_=0)),
                )
                .where(
                    SafeTransaction.chain == self._chain,
                    SafeTransaction.state.in_(OPEN_SAFE_STATES),
                )
                .group_by(SafeTransaction.purpose, SafeTransaction.state)
            ).all()
        self._set_safe_transactions(now, safe_rows)
        counts = {state: (0, 0.0) for state in OPEN_STATES}
        for state, count, oldest in rows:
            age = (now - _aware(oldest)).total_seconds() if oldest is not None else 0.0
            counts[state] = (int(count), max(0.0, age))
        WITHDRAWALS_IN_STATE.set_many(({"state": s}, c) for s, (c, _a) in counts.items())
        WITHDRAWAL_OLDEST_IN_STATE_SECONDS.set_many(
            ({"state": s}, a) for s, (_c, a) in counts.items()
        )
        self._set_chain(wallets, tokens, vault)

    @staticmethod
    def _set_safe_transactions(now: dt.datetime, rows: Sequence[Any]) -> None:
        """The open Safe transactions' gauges; a label set with none goes back to 0."""
        found = {
            (purpose, state): (count, oldest, retries)
            for purpose, state, count, oldest, retries in rows
        }
        opened: list[tuple[dict[str, str], float]] = []
        ages: list[tuple[dict[str, str], float]] = []
        for purpose in SAFE_PURPOSES:
            retrying = 0
            for state in OPEN_SAFE_STATES:
                count, oldest, retries = found.get((purpose, state), (0, None, 0))
                labels = {"purpose": purpose, "state": state}
                opened.append((labels, int(count)))
                age = (now - _aware(oldest)).total_seconds() if oldest is not None else 0.0
                ages.append((labels, max(0.0, age)))
                retrying += int(retries or 0)
            SAFE_TRANSACTIONS_RETRYING.set({"purpose": purpose}, retrying)
        SAFE_TRANSACTIONS_OPEN.set_many(opened)
        SAFE_TRANSACTION_OLDEST_OPEN_SECONDS.set_many(ages)

    def _set_chain(self, wallets: Sequence[Any], tokens: Sequence[Any], vault: str | None) -> None:
        priced = [(symbol, address) for symbol, address in tokens if address]
        for address, next_nonce in wallets:
            wallet = {"wallet": address}
            HOT_WALLET_GAS_BALANCE_WEI.set(wallet, self._reads.native_balance(address))
            chain_nonce = self._reads.w3.eth.get_transaction_count(
                self._reads.w3.to_checksum_address(address), "latest"
            )
            HOT_WALLET_NONCE_GAP.set(wallet, int(next_nonce) - int(chain_nonce))
            for symbol, token_address in priced:
                HOT_WALLET_TOKEN_BALANCE.set(
                    {**wallet, "token": symbol}, self._reads.token_balance(token_address, address)
                )
        if vault:
            for symbol, token_address in priced:
                VAULT_TOKEN_BALANCE.set(
                    {"token": symbol}, self._reads.token_balance(token_address, vault)
                )


__all__ = ["INTERVAL_SECONDS", "ProcessorGauges"]
