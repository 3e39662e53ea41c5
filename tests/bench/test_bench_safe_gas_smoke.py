"""bench.safe_gas keeps working (it is small enough to run whole); its figures come from
`make bench-safe-gas`, and only their order is asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.safe_gas import PATHS
from bench.safe_gas import main as safe_gas_main

pytestmark = pytest.mark.chain


def test_safe_gas_runs_and_orders_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "safe_gas.json"
    assert safe_gas_main(["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["path"], r["recipients"]): r for r in result["rows"]}
    assert set(rows) == {(path, kind) for path in PATHS for kind in ("fresh", "warm")}
    for kind in ("fresh", "warm"):
        hot, l2, plain = (rows[(path, kind)] for path in PATHS)
        # Through a Safe costs more than the hot wallet's own payout, and SafeL2's event more
        # than the plain singleton; the Safes carry the same calldata.
        assert hot["gas"] < plain["gas"] < l2["gas"]
        assert plain["calldata_bytes"] == l2["calldata_bytes"] > hot["calldata_bytes"]
    assert rows[("hot wallet", "warm")]["gas"] < rows[("hot wallet", "fresh")]["gas"]
