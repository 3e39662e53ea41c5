"""The comparison's medians: per side and mode, over its rounds."""

from __future__ import annotations

from typing import Any

from bench.api_compare import Run, medians


def _row(p95: float, gateway: float) -> dict[str, Any]:
    return {
        "p95_ms": p95,
        "p50_ms": p95 / 2,
        "cpu_per_1k": {"gateway": gateway, "gateway-loop": 0.5, "mariadbd": 0.25},
    }


def test_medians_are_per_side_and_mode_and_skip_the_loop_share() -> None:
    runs = [
        Run("baseline", "pipeline", 1, _row(30.0, 1.0)),
        Run("baseline", "pipeline", 2, _row(90.0, 1.2)),
        Run("baseline", "pipeline", 3, _row(40.0, 1.1)),
        Run("current", "gateway-only", 1, _row(20.0, 1.3)),
    ]
    summary = medians(runs)
    assert set(summary) == {"baseline pipeline", "current gateway-only"}
    assert summary["baseline pipeline"]["p95_ms"] == 40.0
    assert summary["baseline pipeline"]["gateway_cpu_ms"] == 1.1
    # gateway-loop is a part of gateway's figure, not another process
    assert summary["baseline pipeline"]["all_cpu_ms"] == 1.1 + 0.25
    assert summary["current gateway-only"]["p50_ms"] == 10.0
