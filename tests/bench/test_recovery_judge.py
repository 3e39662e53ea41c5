"""How `bench.recovery` reads "back to 90 %" from event times, on synthetic streams whose
answer is known: no stack, no timing of this machine."""

from __future__ import annotations

import pytest

from bench.recovery import RateFigures, count_in, judge_rate

RATE = 60.0
KILL = 1_000.0


def steady(start: float, end: float, rate: float = RATE) -> list[float]:
    step = 1 / rate
    return [start + step * (i + 0.5) for i in range(round((end - start) * rate))]


def judge(times: list[float], window: float) -> RateFigures:
    return judge_rate(
        sorted(times),
        KILL,
        KILL + 30,
        pre_window=20,
        window=window,
        bucket=0.5,
        threshold=0.9,
    )


def test_count_in_is_half_open() -> None:
    assert count_in([1.0, 2.0, 3.0], 1.0, 3.0) == 2  # (1, 3]


def test_a_stream_that_does_not_catch_up_is_back_one_window_after_it_resumes() -> None:
    # Refused requests are lost (the gateway, open loop): 3 s of nothing, then the same rate.
    times = steady(KILL - 30, KILL) + steady(KILL + 3, KILL + 40)
    figures = judge(times, window=1.0)
    assert figures.pre_kill_rate == pytest.approx(RATE)
    assert figures.baseline_spread_pct == [100.0, 100.0]
    assert figures.first_event_s == pytest.approx(3.0, abs=0.02)
    assert figures.fell_below
    # The trailing 1 s window holds >= 90 % once 0.9 s of the resumed stream is in it.
    assert figures.recovery_s == 4.0
    assert figures.reason is None


def test_a_stream_that_catches_up_is_back_with_its_catch_up_burst() -> None:
    # Batches every second before the kill; 5 s of nothing; then the whole backlog at once.
    times = [KILL - 30 + i + 0.9 for i in range(30) for _ in range(60)]
    times += [KILL + 5.2] * 300 + [KILL + 6.2 + i for i in range(30) for _ in range(60)]
    figures = judge(times, window=4.0)
    assert figures.first_event_s == pytest.approx(5.2)
    assert figures.recovery_s == 5.5  # the first sample after the burst
    assert figures.min_rate_pct == 0.0


def test_a_short_outage_inside_the_window_counts_zero_with_its_reason() -> None:
    times = steady(KILL - 30, KILL) + steady(KILL + 0.2, KILL + 40, rate=RATE * 1.05)
    figures = judge(times, window=4.0)
    assert not figures.fell_below
    assert figures.recovery_s == 0.0
    assert figures.reason is not None and "never fell below" in figures.reason


def test_a_stream_that_never_returns_has_no_figure_but_a_reason() -> None:
    figures = judge(steady(KILL - 30, KILL), window=4.0)
    assert figures.recovery_s is None
    assert figures.first_event_s is None
    assert figures.reason is not None and "not back" in figures.reason


def test_bursts_farther_apart_than_the_window_are_flagged() -> None:
    # One payout of 300 every 5 s: a 4 s window swings between 0 and 125 %.
    times = [KILL - 40 + 5 * i + 0.3 for i in range(8) for _ in range(300)]
    times += [KILL + 6 + 5 * i for i in range(6) for _ in range(300)]
    figures = judge(times, window=4.0)
    assert figures.baseline_spread_pct is not None
    assert figures.baseline_spread_pct[0] < 90
    assert figures.window_note is not None
