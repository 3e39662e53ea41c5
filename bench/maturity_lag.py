"""How far behind the chain the monitor is: its lag behind the blocks that reach the depth.

The monitor's completion rate is a poor clock for its recovery: it completes a whole block's
payouts at once, blocks are 2 s apart and hold one to three payouts, so a trailing window of a
few seconds swings between about 30 and 170 % of the mean before any kill (bench.recovery's
`baseline_spread_pct`), and "back to 90 %" is decided by which bursts the window happens to
hold. The work the monitor is given is exact, though: a payout mined in block b is due for
COMPLETED once block b + N - 1 exists (N = the confirmation depth). So:

- matured at: the timestamp of block b + N - 1 (whole seconds, as the node stamps it);
- lag at time t: the age of the oldest block that had matured by t while some of its
  withdrawals were not yet COMPLETED (0 when nothing matured is waiting);
- normal lag: the largest lag over the pre-kill window (the poll interval, the moves, and up
  to a second of timestamp rounding);
- caught up: seconds from the kill until the monitor, having completed something again, has
  nothing matured waiting longer than the normal lag: everything that reached the depth while
  it was down is completed, and what reaches it now is completed as promptly as before. Its
  resolution is the block interval: a monitor that was never killed would show the time to its
  next completion (up to one block, 2 s); the peak lag says how far behind the kill left it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SAMPLE_S = 0.1


@dataclass(frozen=True)
class MaturedBlock:
    matured_at: float  # epoch seconds: the timestamp of the block that gave the depth
    last_completed_at: float  # epoch seconds: the last of its withdrawals' COMPLETED rows


@dataclass
class LagFigures:
    normal_lag_s: float | None = None
    peak_lag_s: float | None = None
    caught_up_s: float | None = None
    reason: str | None = None


def matured_blocks(
    completed_at: Mapping[str, float],
    mined_block: Mapping[str, int],
    block_time: Mapping[int, float],
    confirmations: int,
) -> list[MaturedBlock]:
    """Group COMPLETED withdrawals by the block at which their payout reached the depth.

    `completed_at`: withdrawal id -> COMPLETED time; `mined_block`: withdrawal id -> the block
    its payout was mined in; `block_time`: block number -> timestamp (must hold every
    `mined + confirmations - 1`)."""
    last: dict[int, float] = {}
    for withdrawal_id, done in completed_at.items():
        block = mined_block.get(withdrawal_id)
        if block is None:
            continue
        due = block + confirmations - 1
        last[due] = max(last.get(due, done), done)
    return sorted(
        (MaturedBlock(block_time[due], done) for due, done in last.items()),
        key=lambda b: b.matured_at,
    )


def lag_at(blocks: list[MaturedBlock], starts: list[float], t: float) -> float:
    """The age at `t` of the oldest matured block still waiting (blocks sorted by maturity;
    `starts` their maturity times)."""
    for block in blocks[: bisect.bisect_right(starts, t)]:
        if block.last_completed_at > t:
            return t - block.matured_at
    return 0.0


def judge_lag(
    blocks: Iterable[MaturedBlock], t_kill: float, horizon: float, pre_window: float
) -> LagFigures:
    ordered = sorted(blocks, key=lambda b: b.matured_at)
    starts = [b.matured_at for b in ordered]
    figures = LagFigures()
    if not any(b.matured_at < t_kill for b in ordered):
        figures.reason = "no block matured before the kill"
        return figures
    normal = max(
        lag_at(ordered, starts, t_kill - pre_window + i * SAMPLE_S)
        for i in range(round(pre_window / SAMPLE_S))
    )
    after = [
        (i * SAMPLE_S, lag_at(ordered, starts, t_kill + i * SAMPLE_S))
        for i in range(1, int((horizon - t_kill) / SAMPLE_S) + 1)
    ]
    figures.normal_lag_s = round(normal, 2)
    figures.peak_lag_s = round(max((lag for _, lag in after), default=0.0), 2)
    back = min((b.last_completed_at for b in ordered if b.last_completed_at > t_kill), default=None)
    if back is None or back > horizon:
        figures.reason = "nothing completed after the kill before the phase's end"
        return figures
    figures.caught_up_s = next(
        (round(t, 2) for t, lag in after if t_kill + t >= back and lag <= normal), None
    )
    if figures.caught_up_s is None:
        figures.reason = "still behind at the phase's end"
    return figures


def read_matured_blocks(
    stack: Any, completed_at: Mapping[str, float], confirmations: int
) -> list[MaturedBlock]:
    """`matured_blocks` from the stack's database (each withdrawal's payout block) and its
    chain (the timestamps)."""
    from sqlalchemy import select

    from withdrawal_shared.db.models import PayoutTransaction, Withdrawal

    with stack.sessions()() as session:
        rows = session.execute(
            select(Withdrawal.id, PayoutTransaction.block_number)
            .join(PayoutTransaction, PayoutTransaction.id == Withdrawal.payout_tx_id)
            .where(Withdrawal.state == "COMPLETED", PayoutTransaction.block_number.is_not(None))
        ).all()
    mined = {withdrawal_id: int(block) for withdrawal_id, block in rows}
    w3 = stack.web3()
    due = {block + confirmations - 1 for block in mined.values()}
    block_time = {n: float(w3.eth.get_block(n)["timestamp"]) for n in sorted(due)}
    return matured_blocks(completed_at, mined, block_time, confirmations)
