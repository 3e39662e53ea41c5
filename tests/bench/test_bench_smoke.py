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
    assert result["config"]["sizes"] == [1, 10]
    rows = {r["payments"]: r for r in result["rows"]}
    # Gas is deterministic: batching ten payments must cost less per payment than ten
    # transfers, and one payment alone more (it pays for the bitmap slot).
    assert rows[10]["gas_per_payment_vault"] < rows[10]["gas_per_payment_single"]
    assert rows[1]["gas_per_payment_vault"] > rows[1]["gas_per_payment_single"]
