"""The API load benchmark's harness keeps working: two tiny rates for one second each, over
gRPC and REST, against the whole pipeline (the processor running behind the gateway) and
against a gateway process alone on MariaDB and Redis. No timing is asserted (the suite shares
the machine); figures come from `make bench-api`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.api_load import SMOKE_RATES, TRANSPORTS
from bench.api_load import main as api_main


def _rows(result: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    config = result["config"]
    assert config["rates_per_second"] == list(SMOKE_RATES)
    assert config["loop"].startswith("open")
    rows = {(r["transport"], r["rate"]): r for r in result["rows"]}
    assert set(rows) == {(t, rate) for t in TRANSPORTS for rate in SMOKE_RATES}
    for row in rows.values():
        assert row["errors"] == 0, row["error_kinds"]
        assert row["ok"] == row["scheduled"] == round(row["rate"] * row["seconds"])
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["cpu_per_1k"]["gateway"] is not None
    assert result["gateway_exit_code"] == 0
    assert "warning" not in result["gateway_log"]["levels"]
    return rows


def test_api_load_smoke_with_the_processor_running(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    assert api_main(["--smoke", "--generators", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["processor_running"] is True
    # As in `make up`: the batch work yields the CPU to the gateway (STACK_BATCH_NICE).
    nice = result["config"]["nice"]
    assert nice["gateway"] == 0
    assert nice["processor"] == nice["monitor"] == nice["signer"] == nice["webhooks"] == 10
    rows = _rows(result)
    for row in rows.values():
        assert row["cpu_per_1k"]["processor"] is not None
    # The processor took what the gateway accepted past RECEIVED (the smoke is too short to
    # wait for every one to complete).
    by_state = result["store"]["withdrawals_by_state"]
    assert sum(by_state.values()) >= sum(r["ok"] for r in rows.values())
    assert sum(n for state, n in by_state.items() if state != "RECEIVED") > 0


def test_api_load_smoke_gateway_only(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "api.json"
    argv = ["--smoke", "--gateway-only", "--generators", "1", "--redis", redis_url]
    assert api_main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["processor_running"] is False
    rows = _rows(result)
    # Every accepted request left its withdrawal, its audit row and its task (the warm-ups
    # included).
    store = result["store"]
    accepted = store["withdrawals"]
    assert accepted >= sum(r["ok"] for r in rows.values())
    assert store["audit_rows"] == store["queued_tasks"] == accepted
