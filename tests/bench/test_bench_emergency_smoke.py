"""`make bench-emergency` keeps working: a small STANDARD backlog on a chain whose block gas
limit fits one payout, a few EMERGENCY withdrawals, with the emergency wallet and without it,
each on a harness stack of its own. No block count is asserted here (the figures come from
the full run on a quiet machine); what must hold is that every field is there, the chain was
congested, every EMERGENCY withdrawal was mined, the lane's by an EMERGENCY wallet and the
baseline's by a standard one, and nothing was paid twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.emergency import main as emergency_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(900)]

FIELDS = {
    "emergency_wallets",
    "standard_accepted",
    "standard_blocks_spanned",
    "congested",
    "standard_unmined_at_submit",
    "emergency_submitted",
    "emergency_mined",
    "emergency_paid_by_emergency_wallet",
    "blocks_waited",
    "emergencies",
    "exactly_once",
}


def test_bench_emergency_smoke(tmp_path: Path) -> None:
    out = tmp_path / "emergency.json"
    assert emergency_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["config"]["block_gas_limit"] < 60_000_000
    results = document["results"]
    assert set(results) == {"lane", "baseline"}
    for name, result in results.items():
        assert set(result) >= FIELDS, (name, FIELDS - set(result))
        assert set(result["blocks_waited"]) == {"p50", "p95", "max", "never"}, name
        assert result["emergency_submitted"] == result["emergency_mined"] > 0, (name, result)
        assert result["congested"], (name, result["standard_blocks_spanned"])
        verdict = result["exactly_once"]
        assert verdict["ok"], (name, verdict)
        assert verdict["double_payments"] == 0, name
    assert results["lane"]["emergency_wallets"] == 1
    assert results["baseline"]["emergency_wallets"] == 0
    lane, baseline = results["lane"], results["baseline"]
    assert lane["emergency_paid_by_emergency_wallet"] == lane["emergency_submitted"]
    assert baseline["emergency_paid_by_emergency_wallet"] == 0
