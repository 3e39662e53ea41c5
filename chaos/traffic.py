"""Background fee-market traffic for a local anvil: value transfers with varied tips.

`TrafficGenerator` sends simple native-coin transfers between dev accounts from a background
thread, at a configured rate, with priority tips drawn from a configured distribution, so that
`eth_feeHistory` answers with a market (spread reward percentiles) instead of echoing back the
tips the system under test paid itself. It is generic enough for benchmarks too: any loopback RPC
URL, any senders with their keys, any rate, any tip sampler, and a seed for reproducibility.

>>> tips = uniform_tips(30 * GWEI, 300 * GWEI)  # doctest: +SKIP
>>> with TrafficGenerator(anvil.rpc_url, anvil.accounts[1:], tips, rate=20, seed=7) as traffic:
...     ...  # the market is live here
>>> traffic.errors, len(traffic.tips)  # doctest: +SKIP

Transactions are signed locally (eth_account), nonces are tracked locally per sender, and each is
sent with `eth_sendRawTransaction` without waiting for a receipt. The generator stops by itself
after `max_count` transactions or `max_duration` seconds (whichever comes first), or after
`max_consecutive_errors` failed sends in a row (e.g. the node went away); `stop()` ends it early
and joins the thread. `maxFeePerGas` is `2 * baseFee + tip`, so the tip is always paid in full
while the base fee rises by less than 100 % between two refreshes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from eth_account import Account
from web3 import Web3

from chaos.loopback import require_loopback_url
from devstack.anvil import DevAccount
from withdrawal_shared.chain.types import ChecksumAddress, HexStr

__all__ = [
    "GWEI",
    "Pacer",
    "SentTransaction",
    "TipSampler",
    "TrafficError",
    "TrafficGenerator",
    "fixed_tips",
    "uniform_tips",
]

GWEI = 10**9
TRANSFER_GAS = 21_000

TipSampler = Callable[[random.Random], int]
"""Draws one priority tip (wei) from the generator's seeded random source."""


class TrafficError(RuntimeError):
    """The traffic generator was misconfigured or could not start."""


# -- tip distributions -------------------------------------------------------------------------


def uniform_tips(low_wei: int, high_wei: int, *, step_wei: int = 1) -> TipSampler:
    """Tips uniform over `low_wei..high_wei` (both included), in multiples of `step_wei` above
    `low_wei` (e.g. `step_wei=GWEI` for whole-gwei steps)."""
    if low_wei < 0 or high_wei < low_wei:
        raise ValueError(f"need 0 <= low <= high, got {low_wei}..{high_wei}")
    if step_wei < 1:
        raise ValueError("step_wei must be at least 1")
    steps = (high_wei - low_wei) // step_wei

    def sample(rng: random.Random) -> int:
        return low_wei + rng.randint(0, steps) * step_wei

    return sample


def fixed_tips(values_wei: Sequence[int]) -> TipSampler:
    """Tips drawn uniformly from a fixed list (repeat a value to weight it)."""
    values = tuple(values_wei)
    if not values:
        raise ValueError("fixed_tips needs at least one value")
    if any(v < 0 for v in values):
        raise ValueError("tips must not be negative")

    def sample(rng: random.Random) -> int:
        return rng.choice(values)

    return sample


# -- pacing ------------------------------------------------------------------------------------


class Pacer:
    """When the next send is due, for a steady `rate` per second.

    Send `i` (0-based) is due at `origin + i / rate`, so the rate does not drift with the time a
    send takes. When sending falls more than `max_lag` seconds behind the schedule, the schedule
    restarts from now instead of bursting to catch up (the rate is a ceiling, not a debt).
    """

    def __init__(self, rate: float, origin: float, *, max_lag: float = 1.0) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        if max_lag < 0:
            raise ValueError("max_lag must not be negative")
        self.rate = rate
        self.max_lag = max_lag
        self._origin = origin
        self._index = 0
        self.resets = 0

    @property
    def sent(self) -> int:
        return self._index

    def due(self) -> float:
        return self._origin + self._index / self.rate

    def delay(self, now: float) -> float:
        """Seconds to wait from `now` before the next send (0 when it is due or late)."""
        due = self.due()
        if now - due > self.max_lag:
            self._origin = now - self._index / self.rate
            self.resets += 1
            return 0.0
        return max(0.0, due - now)

    def mark_sent(self) -> None:
        self._index += 1


# -- what was sent -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentTransaction:
    tx_hash: HexStr
    sender: ChecksumAddress
    nonce: int
    tip_wei: int
    max_fee_wei: int
    sent_at: float  # time.monotonic()


@dataclass
class _Sender:
    account: DevAccount
    recipient: ChecksumAddress
    nonce: int


class TrafficGenerator:
    """Value transfers between dev accounts at `rate` per second with tips from `tips`.

    Senders take turns (round robin); each pays the next sender in the list (or `recipients`,
    round robin, when given) `value_wei`. The base fee is re-read at most every
    `base_fee_refresh_seconds`. Everything sent is kept in `sent` (and its tips in `tips`);
    failed sends count in `errors`, with the latest messages in `error_messages`, and re-read the
    sender's nonce from the node's pending count.
    """

    def __init__(
        self,
        rpc_url: str,
        senders: Sequence[DevAccount],
        tips: TipSampler,
        *,
        rate: float = 20.0,
        max_count: int | None = None,
        max_duration: float = 60.0,
        seed: int | None = None,
        recipients: Sequence[ChecksumAddress] = (),
        value_wei: int = 1,
        base_fee_refresh_seconds: float = 0.25,
        max_consecutive_errors: int = 50,
        max_lag: float = 1.0,
        request_timeout: float = 5.0,
    ) -> None:
        self.rpc_url = require_loopback_url(rpc_url)
        if not senders:
            raise ValueError("at least one sender is needed")
        if len({s.address for s in senders}) != len(senders):
            raise ValueError("senders must be distinct (nonces are tracked per sender)")
        if not rate > 0:
            raise ValueError("rate must be positive")
        if max_count is not None and max_count < 0:
            raise ValueError("max_count must not be negative")
        if not max_duration > 0:
            raise ValueError("max_duration must be positive")
        if value_wei < 0:
            raise ValueError("value_wei must not be negative")
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        self.senders = tuple(senders)
        self.recipients = tuple(recipients)
        self.tip_sampler = tips
        self.rate = rate
        self.max_count = max_count
        self.max_duration = max_duration
        self.seed = seed
        self.value_wei = value_wei
        self.base_fee_refresh_seconds = base_fee_refresh_seconds
        self.max_consecutive_errors = max_consecutive_errors
        self.max_lag = max_lag
        self.request_timeout = request_timeout

        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent: list[SentTransaction] = []
        self._errors = 0
        self._error_messages: list[str] = []
        self._stop_reason: str | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Read the chain id and each sender's pending nonce, then start sending."""
        if self._thread is not None:
            raise TrafficError("the traffic generator was already started")
        w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": self.request_timeout}))
        try:
            chain_id = int(w3.eth.chain_id)
            senders = [
                _Sender(
                    account,
                    self._recipient_for(i),
                    int(w3.eth.get_transaction_count(account.address, "pending")),
                )
                for i, account in enumerate(self.senders)
            ]
        except Exception as exc:
            raise TrafficError(f"cannot start traffic against {self.rpc_url}: {exc}") from exc
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(w3, chain_id, senders), name="traffic-generator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and join it; idempotent. Raises if it does not end in time."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TrafficError(f"the traffic thread did not stop within {timeout:g}s")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generator has stopped (by itself or not); True if it has."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- what happened -------------------------------------------------------------------------

    @property
    def sent(self) -> list[SentTransaction]:
        with self._lock:
            return list(self._sent)

    @property
    def tips(self) -> list[int]:
        with self._lock:
            return [tx.tip_wei for tx in self._sent]

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    @property
    def error_messages(self) -> list[str]:
        """The latest error messages (at most 20)."""
        with self._lock:
            return list(self._error_messages)

    @property
    def stop_reason(self) -> str | None:
        """Why the thread ended: "max_count", "max_duration", "stopped" or "errors"."""
        with self._lock:
            return self._stop_reason

    @property
    def elapsed(self) -> float:
        """Seconds the generator ran (so far, while running)."""
        if self._started_at is None:
            return 0.0
        end = self._finished_at if self._finished_at is not None else time.monotonic()
        return end - self._started_at

    def __repr__(self) -> str:
        state = "running" if self.running else (self.stop_reason or "idle")
        return (
            f"TrafficGenerator({self.rpc_url}, rate={self.rate:g}/s, {state}, "
            f"sent={len(self._sent)}, errors={self._errors})"
        )

    # -- the thread ----------------------------------------------------------------------------

    def _recipient_for(self, index: int) -> ChecksumAddress:
        if self.recipients:
            return self.recipients[index % len(self.recipients)]
        return self.senders[(index + 1) % len(self.senders)].address

    def _run(self, w3: Web3, chain_id: int, senders: list[_Sender]) -> None:
        reason = "stopped"
        try:
            reason = self._loop(w3, chain_id, senders)
        finally:
            with self._lock:
                self._stop_reason = reason
            self._finished_at = time.monotonic()
            self._done.set()

    def _loop(self, w3: Web3, chain_id: int, senders: list[_Sender]) -> str:
        assert self._started_at is not None
        deadline = self._started_at + self.max_duration
        pacer = Pacer(self.rate, self._started_at, max_lag=self.max_lag)
        base_fee = 0
        base_fee_read_at = float("-inf")
        consecutive_errors = 0
        turn = 0
        while True:
            if self.max_count is not None and pacer.sent >= self.max_count:
                return "max_count"
            now = time.monotonic()
            if now >= deadline:
                return "max_duration"
            delay = pacer.delay(now)
            if delay > 0:
                if self._stop.wait(min(delay, deadline - now)):
                    return "stopped"
                continue
            if self._stop.is_set():
                return "stopped"
            sender = senders[turn % len(senders)]
            turn += 1
            try:
                if now - base_fee_read_at >= self.base_fee_refresh_seconds:
                    block = w3.eth.get_block("latest")
                    base_fee = int(block.get("baseFeePerGas", 0))
                    base_fee_read_at = now
                self._send_one(w3, chain_id, sender, base_fee)
                consecutive_errors = 0
            except Exception as exc:  # a send failed: count it, resync and carry on
                consecutive_errors += 1
                self._record_error(f"{sender.account.address}: {exc}")
                self._resync_nonce(w3, sender)
                if consecutive_errors >= self.max_consecutive_errors:
                    return "errors"
            # A failed attempt uses its slot too, so a dead node is not hammered.
            pacer.mark_sent()

    def _send_one(self, w3: Web3, chain_id: int, sender: _Sender, base_fee: int) -> None:
        tip = int(self.tip_sampler(self._rng))
        if tip < 0:
            raise TrafficError(f"the tip sampler drew a negative tip ({tip})")
        max_fee = 2 * base_fee + tip
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": chain_id,
            "nonce": sender.nonce,
            "to": sender.recipient,
            "value": self.value_wei,
            "gas": TRANSFER_GAS,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
            "data": b"",
        }
        signed = Account.sign_transaction(tx, sender.account.private_key)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        record = SentTransaction(
            tx_hash=HexStr(tx_hash.to_0x_hex()),
            sender=sender.account.address,
            nonce=sender.nonce,
            tip_wei=tip,
            max_fee_wei=max_fee,
            sent_at=time.monotonic(),
        )
        sender.nonce += 1
        with self._lock:
            self._sent.append(record)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors += 1
            self._error_messages.append(message)
            del self._error_messages[:-20]

    def _resync_nonce(self, w3: Web3, sender: _Sender) -> None:
        try:
            sender.nonce = int(w3.eth.get_transaction_count(sender.account.address, "pending"))
        except Exception as exc:
            self._record_error(f"{sender.account.address}: nonce resync failed: {exc}")
