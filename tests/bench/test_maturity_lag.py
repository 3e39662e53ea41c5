"""The monitor's lag behind matured blocks (bench.maturity_lag), on made-up timelines: the
figure must show a monitor that stopped completing and when it caught up, and not move for a
monitor that kept up."""

from __future__ import annotations

from bench.maturity_lag import MaturedBlock, judge_lag, matured_blocks

KILL = 100.0


def _timeline(outage_until: float | None) -> list[MaturedBlock]:
    """A block reaches the depth every 2 s and is completed 0.5 s later; during the outage
    nothing is completed until it ends, and then everything waiting at once."""
    blocks = []
    for i in range(40):
        matured = 60.0 + 2 * i
        done = matured + 0.5
        if outage_until is not None and KILL <= done < outage_until:
            done = outage_until
        blocks.append(MaturedBlock(matured, done))
    return blocks


def test_a_monitor_that_stopped_is_caught_up_when_its_backlog_is_completed() -> None:
    figures = judge_lag(_timeline(outage_until=104.7), KILL, 130.0, pre_window=20.0)
    assert figures.normal_lag_s is not None and 0.4 <= figures.normal_lag_s <= 0.5
    # Blocks matured at 100, 102 and 104 waited until 104.7: the oldest was 4.7 s late.
    assert figures.peak_lag_s is not None and 4.6 <= figures.peak_lag_s <= 4.7
    assert figures.caught_up_s is not None and 4.6 <= figures.caught_up_s <= 4.8
    assert figures.reason is None


def test_a_monitor_that_kept_up_shows_its_next_completion() -> None:
    figures = judge_lag(_timeline(outage_until=None), KILL, 130.0, pre_window=20.0)
    assert figures.caught_up_s is not None and 0.4 <= figures.caught_up_s <= 0.6
    assert figures.peak_lag_s == figures.normal_lag_s


def test_a_monitor_that_completes_its_backlog_in_two_polls_is_caught_up_at_the_second() -> None:
    blocks = _timeline(outage_until=104.7)
    blocks[20] = MaturedBlock(100.0, 106.0)  # the oldest block waits for a second poll
    figures = judge_lag(blocks, KILL, 130.0, pre_window=20.0)
    assert figures.caught_up_s is not None and 5.9 <= figures.caught_up_s <= 6.1


def test_a_monitor_still_behind_at_the_end_has_no_figure() -> None:
    figures = judge_lag(_timeline(outage_until=200.0), KILL, 130.0, pre_window=20.0)
    assert figures.caught_up_s is None
    assert figures.reason == "nothing completed after the kill before the phase's end"


def test_withdrawals_are_grouped_by_the_block_that_gave_the_depth() -> None:
    blocks = matured_blocks(
        completed_at={"a": 10.5, "b": 11.0, "c": 13.0, "orphan": 9.0},
        mined_block={"a": 5, "b": 5, "c": 6},
        block_time={9: 10.0, 10: 12.0},
        confirmations=5,
    )
    # a and b were mined in block 5, due at block 9; c in block 6, due at block 10.
    assert blocks == [MaturedBlock(10.0, 11.0), MaturedBlock(12.0, 13.0)]
