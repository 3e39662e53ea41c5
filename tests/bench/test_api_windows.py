"""bench.api_load's slow windows (a stall shows as a few windows holding the slow requests)
and the directory `--keep` keeps the services' files in."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.api_load import P95_LIMIT_MS, WINDOW_SECONDS, GeneratorResult, parse_args, windows


def _result(points: list[tuple[float, float]], t0: float) -> GeneratorResult:
    """A generator's result from (offset from t0 in s, latency in ms) pairs."""
    return GeneratorResult(
        scheduled=len(points),
        latencies_ms=[latency for _, latency in points],
        due_at=[t0 + offset for offset, _ in points],
    )


def test_a_stall_is_one_slow_window_holding_the_slow_requests() -> None:
    t0 = 1000.0
    calm = [(i * 0.01, 5.0) for i in range(100)]  # 1 s: 10 windows of 10 requests at 5 ms
    stall = [(0.5 + i * 0.01, 80.0) for i in range(10)]  # window 5: 10 more at 80 ms
    late = [(0.95, P95_LIMIT_MS + 1)]  # one slow request in a calm window
    # Two generators, as the benchmark deals requests out.
    spread = windows(t0, [_result(calm[::2] + stall, t0), _result(calm[1::2] + late, t0)])
    assert spread is not None
    assert spread.count == round(1 / WINDOW_SECONDS)
    assert spread.slow == 1
    assert spread.slowest[0] == (0.5, 80.0)
    assert spread.over_limit_in_slow_pct == round(100 * 10 / 11, 1)


def test_no_slow_request_no_slow_window() -> None:
    t0 = 5.0
    calm = windows(t0, [_result([(i * 0.05, 3.0) for i in range(40)], t0)])
    assert calm is not None
    assert (calm.count, calm.slow, calm.over_limit_in_slow_pct) == (20, 0, None)
    assert windows(t0, [GeneratorResult()]) is None


def test_keep_wants_a_new_or_empty_directory(tmp_path: Path) -> None:
    assert parse_args(["--keep", str(tmp_path / "new")]).keep == tmp_path / "new"
    assert parse_args(["--keep", str(tmp_path)]).keep == tmp_path  # empty
    (tmp_path / "stack.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_args(["--keep", str(tmp_path)])
