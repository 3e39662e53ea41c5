"""The API load benchmark's harness keeps working: two tiny rates for one second each, over
gRPC and REST, against a gateway process of its own on MariaDB and Redis. No timing is
asserted (the suite shares the machine); figures come from `make bench-api`."""

from __future__ import annotations

import json
from pathlib import Path

from bench.api_load import SMOKE_RATES, TRANSPORTS
from bench.api_load import main as api_main


def test_api_load_smoke(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "api.json"
    assert api_main(["--smoke", "--generators", "1", "--redis", redis_url, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    config = result["config"]
    assert config["rates_per_second"] == list(SMOKE_RATES)
    assert config["loop"].startswith("open")
    assert "processor" in config["processes"]
    rows = {(r["transport"], r["rate"]): r for r in result["rows"]}
    assert set(rows) == {(t, rate) for t in TRANSPORTS for rate in SMOKE_RATES}
    for row in rows.values():
        assert row["errors"] == 0, row["error_kinds"]
        assert row["ok"] == row["scheduled"] == round(row["rate"] * row["seconds"])
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["cpu_per_1k"]["gateway"] is not None
    # Every accepted request left its withdrawal, its audit row and its task (the warm-ups
    # included), and the gateway logged no warning.
    store = result["store"]
    accepted = store["withdrawals"]
    assert accepted >= sum(r["ok"] for r in rows.values())
    assert store["audit_rows"] == store["queued_tasks"] == accepted
    assert result["gateway_exit_code"] == 0
    assert "warning" not in result["gateway_log"]["levels"]
