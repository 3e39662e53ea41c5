"""`PollReport`: what one poll of the chain follower saw and did."""

from __future__ import annotations

from dataclasses import dataclass, field

from withdrawal_shared.db.transitions import Moved


@dataclass
class PollReport:
    """What one poll saw and did. `moved` holds committed withdrawal moves, in order."""

    head: int = 0
    moved: list[Moved] = field(default_factory=list)
    pending: int = 0  # BROADCAST, no receipt yet
    mined: int = 0
    reverted: int = 0  # reverted receipts seen (the payout waits for its depth)
    reverted_final: int = 0  # reverted payouts at the depth: their withdrawals are retried
    reorged: int = 0
    confirmed: int = 0
    conflicts: int = 0
    anomalies: int = 0  # left alone for an operator (logged as errors)
    emergency_late: int = 0  # EMERGENCY payouts found late in this poll (svc_monitor.emergency)
