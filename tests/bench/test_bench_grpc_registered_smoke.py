"""bench.grpc_registered keeps working: both servers answer every call of a short run, and the
JSON holds each run and the medians. Figures come from the full run, never from this one."""

from __future__ import annotations

import json
from pathlib import Path

from bench.grpc_registered import main


def test_grpc_registered_smoke(tmp_path: Path) -> None:
    out = tmp_path / "registered.json"
    assert main(["--smoke", "--methods", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [run["mode"] for run in result["runs"]] == ["registered", "generic"]
    for run in result["runs"]:
        assert run["methods"] == 20
        assert run["calls"] == 100
        assert run["failed"] == 0
        assert run["server_cpu_ms_per_call"] > 0
    assert set(result["median_server_cpu_ms_per_call"]) == {"registered", "generic"}
