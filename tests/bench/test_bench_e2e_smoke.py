"""`make bench-e2e` keeps working: both variants (batched and one withdrawal per transaction)
for a few seconds at a low rate on their own harness stacks. No timing is asserted here; the
figures come from the full run on a quiet machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.e2e import main as e2e_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(900)]


def test_bench_e2e_smoke(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    assert e2e_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    config = document["config"]
    assert config["confirmations"] == 5
    assert config["baseline_payout_size"] == 1
    assert config["payout_size_max"] > 1
    results = document["results"]
    assert set(results) == {"batched", "baseline"}
    for name, result in results.items():
        assert result["scheduled"] == result["accepted"] > 0, name
        assert result["refused"] == 0, name
        assert result["completed"] == result["accepted"], name
        verdict = result["exactly_once"]
        assert verdict["ok"], (name, verdict)
        assert verdict["paid_exactly_once"] == result["accepted"], name
        assert verdict["double_payments"] == verdict["contract_skips"] == 0, name
        assert result["first_inclusion_s"]["never"] == result["completed_s"]["never"] == 0
        assert result["gas_per_withdrawal"] > 0
        # The harness's treasury Safe (on by default, as in `make up`) owns the vault.
        assert result["treasury_safe"] is not None, name
        assert result["vault_owner"] == result["treasury_safe"], name
        for process in ("gateway", "processor", "signer", "monitor", "anvil", "generator"):
            assert result["cpu"][process]["cpu_seconds"] is not None, (name, process)
    # One withdrawal per transaction in the baseline; the batched run groups them.
    assert results["baseline"]["payout_items_max"] == 1
    assert results["batched"]["payouts"] < results["baseline"]["payouts"]
    assert document["targets"]["exactly_once"] is True
