"""EIP-1559 fee pricing from `eth_feeHistory`, with a per-chain minimum tip, base-fee
headroom and a hard cap (all read from the chains table)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from withdrawal_shared.states import Priority

# Reward percentiles asked of eth_feeHistory, one per urgency.
PERCENTILES: Mapping[Priority, float] = {
    Priority.STANDARD: 50.0,
    Priority.PRIORITY: 75.0,
    Priority.EMERGENCY: 95.0,
}
HISTORY_BLOCKS = 10


@dataclass(frozen=True)
class FeePolicy:
    min_priority_fee_wei: int
    max_fee_cap_wei: int
    base_fee_headroom_pct: int


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


class FeeCapExceeded(Exception):
    """The market asks more than the chain's hard cap allows."""


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def price(history: Mapping[str, Any], priority: Priority, policy: FeePolicy) -> Fees:
    """Fees from an eth_feeHistory answer asked with `PERCENTILES` (in that order).

    tip = max(median over the blocks of the urgency's reward percentile, the chain's minimum);
    max fee = next base fee * (1 + headroom) + tip, which must stay within the hard cap.
    """
    base_fees: Sequence[Any] = history["baseFeePerGas"]
    next_base_fee = _int(base_fees[-1])
    column = list(PERCENTILES).index(priority)
    rewards = sorted(_int(row[column]) for row in history.get("reward") or [] if row)
    market_tip = rewards[len(rewards) // 2] if rewards else 0
    tip = max(market_tip, policy.min_priority_fee_wei)
    max_fee = next_base_fee * (100 + policy.base_fee_headroom_pct) // 100 + tip
    if tip > policy.max_fee_cap_wei:
        raise FeeCapExceeded(
            f"the minimum tip {tip} wei exceeds the cap {policy.max_fee_cap_wei} wei"
        )
    if max_fee > policy.max_fee_cap_wei:
        if next_base_fee + tip > policy.max_fee_cap_wei:
            raise FeeCapExceeded(
                f"base fee {next_base_fee} + tip {tip} wei exceeds the cap "
                f"{policy.max_fee_cap_wei} wei"
            )
        max_fee = policy.max_fee_cap_wei
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)


def percentiles() -> list[float]:
    return list(PERCENTILES.values())
