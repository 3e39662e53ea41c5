"""The faults a chaos run injects, one at a time, and what it counts of each.

- `kill`: SIGKILL of one service (its whole process group), chosen at random; the supervisor
  restarts it. No grace, no cleanup: whatever it was doing stops mid-step.
- `reorg`: `anvil_reorg` of 1..N-1 blocks (N = the confirmation depth): the replaced blocks'
  transactions are gone, so payouts the monitor saw mined must be found missing and the same
  signed bytes re-broadcast, and nothing may reach COMPLETED on a block that later vanishes.
  Reorgs are aimed (every one until one has taken a payout away, then three in four): the
  injector waits up to `REORG_AIM_SECONDS` for a transaction from one of our hot wallets in
  the last N-1 blocks, then, with mining paused, finds the newest such block and reorganises
  at least that deep, so that the run takes mined payouts away instead of hoping a random
  reorg meets one; they come sooner while withdrawals are still being submitted.
- `pause_mining`: no block for a few seconds; transactions pile up, fee estimates go stale.
- `mempool_drop`: the node forgets every pending transaction (`anvil_dropAllTransactions`, as
  a node restart or a mempool eviction would): broadcast payouts never mine until the processor
  finds them stuck and replaces them at the same nonce (or the monitor re-sends the bytes).
- `redis_flush` / `redis_restart`: every stream, consumer group and pending entry is lost; the
  database is the source of truth and the processor's sweeper re-drives what was queued.
- `rpc_window`: for a few seconds every fault proxy in front of anvil delays, times out after
  forwarding, answers 5xx, resets connections and drops sent transactions from the mempool
  (`anvil_dropTransaction`: a broadcast that was accepted and then lost, which only a stuck-
  transaction replacement at the same nonce can recover). Counted by the proxies themselves.
  The first window drops every send (`SEND_DROPS`); until each other kind has happened once,
  the windows give the kinds not seen yet `UNSEEN_RATE` each (`window_rates`), so that a short
  run, whose windows see few requests, has every kind however its draws fall.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

from web3 import Web3

from chaos.fault_proxy import FaultRates
from devstack.anvil import reorg, rpc, set_interval_mining
from devstack.harness import HarnessStack

from .config import ChaosConfig

log = logging.getLogger("chaos")

RPC_FAULTS = FaultRates(
    delay=0.10,
    delay_max_seconds=0.4,
    timeout_after_forward=0.03,
    hang_seconds=12.0,
    http_5xx=0.08,
    reset=0.06,
    drop_tx=0.25,
)
SEND_DROPS = FaultRates(drop_tx=1.0, methods=frozenset({"eth_sendRawTransaction"}))
"""The first RPC window drops every send: a dropped broadcast is rare at `RPC_FAULTS`'s rate
(it needs a send to pass during a window while the transaction is still pending), and every run
must lose at least one."""
NO_FAULTS = FaultRates()
UNSEEN_RATE = 0.15
"""The probability of each RPC fault kind not injected yet in a window (four at most: with
`RPC_FAULTS`' drop rate they add up to 0.85)."""


def window_rates(injected: Mapping[str, int]) -> FaultRates:
    """The rates of the next RPC window, given the faults injected so far: every send dropped
    until one was, then `RPC_FAULTS` with each kind not seen yet at `UNSEEN_RATE` at least."""
    if injected.get("drop_tx", 0) == 0:
        return SEND_DROPS
    unseen = {
        kind: max(UNSEEN_RATE, getattr(RPC_FAULTS, kind))
        for kind in ("delay", "timeout_after_forward", "http_5xx", "reset")
        if injected.get(kind, 0) == 0
    }
    return replace(RPC_FAULTS, **unseen)


REORG_AIM_SECONDS = 10.0
"""How long an aimed reorg waits for one of our transactions to be mined within reach."""
UNAIMED_REORG_SHARE = 0.25
"""The share of reorgs after the first that go to a random depth, wherever our payouts are."""
KINDS = (
    "kill",
    "reorg",
    "pause_mining",
    "mempool_drop",
    "redis_flush",
    "redis_restart",
    "rpc_window",
)


class FaultInjector:
    def __init__(self, stack: HarnessStack, config: ChaosConfig, w3: Web3) -> None:
        self.stack = stack
        self.config = config
        self.w3 = w3
        self.random = random.Random(config.seed)
        self.injected: Counter[str] = Counter()
        self.reorg_depths: Counter[int] = Counter()
        self.reorgs_removing_ours = 0  # reorgs that took at least one of our transactions
        self.our_transactions_reorged = 0
        self._wallets = {address.lower() for address in stack.result.hot_wallets}
        self.submitting = True
        """Set by the run while withdrawals are still being submitted: payouts are being mined
        then, so reorgs come sooner (an aimed reorg finds nothing once the payouts stop)."""
        self.events: list[tuple[float, str]] = []
        self._started = time.monotonic()

    # -- choosing ------------------------------------------------------------------------

    def next_kind(self) -> str:
        """Every kind once first (in a shuffled order), then by weight toward the targets."""
        missing = [kind for kind in KINDS if self.injected[kind] == 0]
        if missing:
            return self.random.choice(missing)
        # Toward the run's targets: a kind still short of its target is likely, the others
        # keep happening now and then.
        short = {
            "kill": self.injected["kill"] < self.config.min_kills,
            "reorg": self.injected["reorg"] < self.config.min_reorgs,
            "rpc_window": self.rpc_fault_total() < self.config.min_rpc_faults,
        }
        weights = {
            "kill": 6.0 if short["kill"] else 1.5,
            "reorg": (1.5 if short["reorg"] else 0.5) * (2 if self.submitting else 1),
            "pause_mining": 0.5,
            "mempool_drop": 0.5,
            "redis_flush": 0.4,
            "redis_restart": 0.4,
            "rpc_window": 3.0 if short["rpc_window"] else 1.0,
        }
        kinds = list(weights)
        return self.random.choices(kinds, [weights[k] for k in kinds])[0]

    def targets_met(self) -> bool:
        return (
            all(self.injected[kind] > 0 for kind in KINDS)
            and self.injected["kill"] >= self.config.min_kills
            and self.injected["reorg"] >= self.config.min_reorgs
            and self.rpc_fault_total() >= self.config.min_rpc_faults
        )

    def inject(self, kind: str | None = None) -> str:
        kind = kind or self.next_kind()
        action: Callable[[], str] = getattr(self, f"_{kind}")
        detail = action()
        if detail.startswith("skipped"):
            log.info("fault %s %s", kind, detail)
            return kind
        self.injected[kind] += 1
        stamp = time.monotonic() - self._started
        self.events.append((stamp, f"{kind} {detail}".strip()))
        log.info("fault %s %s at +%.1fs", kind, detail, stamp)
        return kind

    # -- the faults ----------------------------------------------------------------------

    def _kill(self) -> str:
        # Only a service that is up again: killing one still starting would only prolong one
        # outage instead of injecting a new fault.
        up = [name for name in self.stack.service_names if self.stack.serving(name)]
        if not up:
            return "skipped (no service answers its health check yet)"
        never = [name for name in up if self.stack.kills[name] == 0]
        name = self.random.choice(never or up)
        pid = self.stack.kill(name)
        return f"{name} (pid {pid})"

    def _reorg(self) -> str:
        max_depth = max(1, self.config.confirmations - 1)
        aim = self.reorgs_removing_ours == 0 or self.random.random() >= UNAIMED_REORG_SHARE
        if aim:
            # Wait for one of our transactions within reach, with mining running (pausing and
            # resuming it restarts anvil's block timer: a loop of pauses would mine nothing).
            deadline = time.monotonic() + REORG_AIM_SECONDS
            while not self._ours_by_depth(max_depth) and time.monotonic() < deadline:
                time.sleep(0.25)
        # Mining paused, so that the head cannot move between reading and reorganising.
        set_interval_mining(self.w3, 0)
        try:
            ours = self._ours_by_depth(max_depth)
            nearest = min(ours, default=None)
            low = nearest if aim and nearest is not None else 1
            depth = self.random.randint(low, max_depth)
            reorg(self.w3, depth)
        finally:
            set_interval_mining(self.w3, int(self.config.block_time))
        removed = sum(n for d, n in ours.items() if d <= depth)
        self.reorg_depths[depth] += 1
        self.our_transactions_reorged += removed
        self.reorgs_removing_ours += removed > 0
        return f"depth {depth}, {removed} of our transactions removed" + (
            "" if aim else " (unaimed)"
        )

    def _ours_by_depth(self, max_depth: int) -> dict[int, int]:
        """How many of our hot wallets' transactions each of the last `max_depth` blocks holds,
        by depth (1 = the head), for the blocks that hold any."""
        head = self.w3.eth.block_number
        ours: dict[int, int] = {}
        for depth in range(1, min(max_depth, head) + 1):
            block = self.w3.eth.get_block(head - depth + 1, full_transactions=True)
            count = sum(
                1
                for tx in block["transactions"]
                if not isinstance(tx, bytes) and str(tx["from"]).lower() in self._wallets
            )
            if count:
                ours[depth] = count
        return ours

    def _pause_mining(self) -> str:
        set_interval_mining(self.w3, 0)
        time.sleep(self.config.mining_pause_seconds)
        set_interval_mining(self.w3, int(self.config.block_time))
        return f"{self.config.mining_pause_seconds:g}s"

    def _mempool_drop(self) -> str:
        pending = rpc(self.w3, "txpool_status", [])
        rpc(self.w3, "anvil_dropAllTransactions", [])
        return f"{int(pending.get('pending', '0x0'), 16)} pending dropped"

    def _redis_flush(self) -> str:
        self.stack.flush_redis()
        return ""

    def _redis_restart(self) -> str:
        self.stack.restart_redis(self.config.redis_down_seconds)
        return f"down {self.config.redis_down_seconds:g}s"

    def _rpc_window(self) -> str:
        rates = window_rates(self.rpc_faults())
        for proxy in self.stack.proxies:
            proxy.set_rates(rates)
        time.sleep(self.config.rpc_fault_window_seconds)
        for proxy in self.stack.proxies:
            proxy.set_rates(NO_FAULTS)
        return f"{self.config.rpc_fault_window_seconds:g}s"

    # -- counting ------------------------------------------------------------------------

    def rpc_faults(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for proxy in self.stack.proxies:
            counts = proxy.counts()
            for kind in ("delay", "timeout_after_forward", "http_5xx", "reset", "drop_tx"):
                total[kind] += counts.get(kind, 0)
        return total

    def rpc_fault_total(self) -> int:
        return sum(self.rpc_faults().values())

    def calm(self) -> None:
        """Stop every fault: proxies pass everything, mining runs."""
        for proxy in self.stack.proxies:
            proxy.set_rates(NO_FAULTS)
        set_interval_mining(self.w3, int(self.config.block_time))
