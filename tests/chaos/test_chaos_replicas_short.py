"""The chaos harness's short replica variant (`make chaos-replicas` runs the full one): two
gateways, two processors and two monitors, kills among them and every other kind of fault;
exactly-once judged from the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.config import SHORT_REPLICAS
from chaos.faults import KINDS
from chaos.run import run


@pytest.mark.timeout(900)
def test_replicas_under_chaos_pay_every_withdrawal_exactly_once(tmp_path: Path) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        print(line)
        lines.append(line)

    report = run(SHORT_REPLICAS, var_dir=tmp_path / "chaos", out=out)
    verdict = report["verdict"]
    log = "\n".join(lines)
    for kind in KINDS:
        assert report["faults_injected"].get(kind, 0) >= 1, f"no {kind} fault\n{log}"
    kills = report["kills_per_service"]
    assert {"gateway-2", "processor-2", "monitor-2"} <= set(kills), kills
    assert sum(kills.values()) >= SHORT_REPLICAS.min_kills, kills
    assert report["withdrawals_accepted"] == SHORT_REPLICAS.withdrawals, log
    assert report["client_refused"] == {}, log
    assert report["quiesced"], f"not quiescent: {verdict['withdrawal_states']}\n{log}"
    assert verdict["double_payments"] == 0, log
    assert verdict["wrong_amounts"] == 0, log
    assert verdict["lost_withdrawals"] == 0, log
    assert verdict["contract_skips"] == 0, log
    assert verdict["paid_exactly_once"] + verdict["terminal_unpaid"] == SHORT_REPLICAS.withdrawals
    assert report["ok"]
