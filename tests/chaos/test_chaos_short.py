"""The chaos harness's short variant (`make chaos` runs the full one): every kind of fault at
least once against the real stack, then exactly-once judged from the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.config import SHORT
from chaos.faults import KINDS
from chaos.run import run

RPC_FAULT_KINDS = ("delay", "timeout_after_forward", "http_5xx", "reset", "drop_tx")


@pytest.mark.timeout(900)
def test_short_chaos_run_pays_every_withdrawal_exactly_once(tmp_path: Path) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        print(line)
        lines.append(line)

    report = run(SHORT, var_dir=tmp_path / "chaos", out=out)
    verdict = report["verdict"]
    log = "\n".join(lines)
    # Every kind of fault happened at least once, and as often as the short variant asks.
    for kind in KINDS:
        assert report["faults_injected"].get(kind, 0) >= 1, f"no {kind} fault\n{log}"
    for kind in RPC_FAULT_KINDS:
        assert report["rpc_faults_by_kind"].get(kind, 0) >= 1, f"no RPC {kind} fault\n{log}"
    assert sum(report["kills_per_service"].values()) >= SHORT.min_kills
    assert report["rpc_faults_total"] >= SHORT.min_rpc_faults
    # The first reorg is aimed at a block holding one of our payouts: it took it away.
    assert report["reorgs_removing_our_transactions"] >= 1, log
    assert report["our_transactions_reorged"] >= 1, log
    # Nothing the gateway accepted was refused or lost; everything was settled.
    assert report["withdrawals_accepted"] == SHORT.withdrawals, log
    assert report["client_refused"] == {}, log
    assert report["quiesced"], f"not quiescent: {verdict['withdrawal_states']}\n{log}"
    # The invariants, from the chain.
    assert verdict["double_payments"] == 0, log
    assert verdict["wrong_amounts"] == 0, log
    assert verdict["lost_withdrawals"] == 0, log
    assert verdict["contract_skips"] == 0, log
    assert verdict["paid_exactly_once"] + verdict["terminal_unpaid"] == SHORT.withdrawals
    assert report["ok"]
