"""What a chaos run does: how many withdrawals, how fast, which faults and how often."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChaosConfig:
    withdrawals: int = 2_000
    submit_rate: float = 12.0
    """Withdrawals submitted per second (the run lasts about withdrawals / submit_rate)."""
    min_kills: int = 30
    min_reorgs: int = 5
    min_rpc_faults: int = 500
    fault_interval_seconds: float = 2.0
    """Mean time between two injected faults (exponentially distributed)."""
    rpc_fault_window_seconds: float = 6.0
    """How long one window of RPC faults lasts on every proxy."""
    confirmations: int = 3
    """The chain's confirmation depth N; reorgs are at most N - 1 blocks deep."""
    block_time: float = 1.0
    rpc_proxies: int = 2
    mining_pause_seconds: float = 4.0
    redis_down_seconds: float = 1.0
    quiescence_timeout_seconds: float = 600.0
    seed: int = 20261124
    database: str = "mariadb"
    replicas: dict[str, int] = field(default_factory=dict)
    """Processes per service beyond one (`devstack.harness.REPLICABLE`): the kills then hit
    replicas and leaders alike, and the submitter spreads over every gateway."""
    service_env: dict[str, str] = field(
        default_factory=lambda: {
            # Recover quickly: the sweeper re-drives what a flushed Redis lost, a dead
            # consumer's messages are claimed soon, a stranded transaction is replaced.
            "PROCESSOR_SWEEP_AGE_SECONDS": "5",
            "PROCESSOR_CLAIM_IDLE_SECONDS": "5",
            "PROCESSOR_STUCK_AFTER_BLOCKS": "4",
            "PROCESSOR_BATCH_MAX_WAIT_SECONDS": "0.5",
            "PROCESSOR_BATCH_MAX_ITEMS": "100",
            "MONITOR_POLL_SECONDS": "0.3",
            "MONITOR_RPC_TIMEOUT_SECONDS": "3",
        }
    )


FULL = ChaosConfig()
"""The issue's targets: >= 2,000 withdrawals, 30 kills, 5 reorgs, 500 RPC faults."""

SHORT = ChaosConfig(
    withdrawals=60,
    submit_rate=1.5,
    min_kills=4,
    min_reorgs=1,
    min_rpc_faults=20,
    fault_interval_seconds=1.5,
    rpc_fault_window_seconds=3.0,
    mining_pause_seconds=3.0,
    quiescence_timeout_seconds=240.0,
)
"""Every kind of fault at least once, in about two minutes (inside `make test`)."""

REPLICAS = {"gateway": 2, "processor": 2, "monitor": 2}
"""Two gateways, two processors and two monitors (`make chaos-replicas`, `--replicas`)."""

SHORT_REPLICAS = dataclasses.replace(SHORT, withdrawals=40, min_kills=6, replicas=REPLICAS)
"""The replica variant inside `make test`: every kind of fault, and kills among six processes
where three run alone."""
