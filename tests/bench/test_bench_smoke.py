"""The benchmark harness keeps working: a tiny variant of each benchmark runs here. Figures
come from the full runs (`make bench-*`), never from these."""

from __future__ import annotations

import json
from pathlib import Path

from bench.gas_per_payment import main as gas_main


def test_gas_per_payment_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gas.json"
    assert gas_main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["withdrawals_per_transaction"] == [1, 10]
    rows = {(r["recipients"], r["withdrawals"]): r for r in result["rows"]}
    assert set(rows) == {("fresh", 1), ("fresh", 10), ("warm", 1), ("warm", 10)}
    # Gas is deterministic: ten withdrawals in one payout cost less each than ten transfers,
    # and warm recipients (no new balance slot) cost less than fresh ones.
    for kind in ("fresh", "warm"):
        assert rows[(kind, 10)]["ratio"] < 1
    assert rows[("warm", 10)]["gas_per_withdrawal"] < rows[("fresh", 10)]["gas_per_withdrawal"]
