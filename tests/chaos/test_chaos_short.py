"""The chaos harness's short variant (`make chaos` runs the full one): every kind of fault at
least once against the real stack, then exactly-once judged from the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.config import SHORT
from chaos.run import run
from tests.chaos.verdict import assert_passed

RPC_FAULT_KINDS = ("delay", "timeout_after_forward", "http_5xx", "reset", "drop_tx")


@pytest.mark.timeout(900)
def test_short_chaos_run_pays_every_withdrawal_exactly_once(tmp_path: Path) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        print(line)
        lines.append(line)

    report = run(SHORT, var_dir=tmp_path / "chaos", out=out)
    log = "\n".join(lines)
    for kind in RPC_FAULT_KINDS:
        assert report["rpc_faults_by_kind"].get(kind, 0) >= 1, f"no RPC {kind} fault\n{log}"
    assert report["rpc_faults_total"] >= SHORT.min_rpc_faults
    # The first reorg is aimed at a block holding one of our payouts: it took it away.
    assert report["reorgs_removing_our_transactions"] >= 1, log
    assert report["our_transactions_reorged"] >= 1, log
    assert_passed(report, SHORT, log)
