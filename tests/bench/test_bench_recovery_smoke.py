"""`make bench-recovery` keeps working: a low rate, short windows, one SIGKILL each of the
processor, the monitor and the gateway on a harness stack of its own, then the exactly-once
check from the chain. No timing is asserted here (the figures come from full runs on a quiet
machine); what must hold is that every kill was judged, with a figure or a reason, and that
nothing was paid twice or lost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.recovery import main as recovery_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(900)]


def test_bench_recovery_smoke(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    assert recovery_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    config = document["config"]
    assert config["confirmations"] == 5
    assert config["kill_order"] == ["processor", "monitor", "gateway"]
    results = document["results"]
    services = results["services"]
    assert list(services) == ["processor", "monitor", "gateway"]
    for name, phase in services.items():
        assert phase["killed_pid"] is not None, name
        assert phase["serving_s"] is not None, (name, phase)
        recovery = phase["recovery_s"]
        if recovery is None:
            assert phase["reason"], (name, phase)
        else:
            assert math.isfinite(recovery) and recovery >= 0, (name, phase)
        assert phase["series"], name
    # The monitor's lag behind the blocks reaching the depth, read from the chain: blocks
    # matured before its kill, so a normal lag was measured.
    lag = services["monitor"]["maturity_lag"]
    assert lag["normal_lag_s"] is not None and lag["normal_lag_s"] >= 0, lag
    assert lag["caught_up_s"] is not None or lag["reason"], lag
    assert results["kills"] == {
        "signer": 0,
        "processor": 1,
        "monitor": 1,
        "gateway": 1,
        "webhooks": 0,
    }
    load = results["load"]
    assert load["accepted"] > 0
    # Every refused submission came back on its retry with the same request_id, and a
    # withdrawal the gateway stored without answering came back as that same withdrawal.
    assert load["accepted_on_retry"] == load["refused"]
    assert load["idempotency_mismatches"] == 0
    verdict = results["exactly_once"]
    assert verdict["ok"], verdict
    assert verdict["double_payments"] == verdict["lost_withdrawals"] == 0
    assert verdict["paid_exactly_once"] == load["accepted"] + load["accepted_on_retry"]
    assert document["targets"]["met"]["exactly_once"] is True
