"""What every chaos run must show, whatever its size or replicas."""

from __future__ import annotations

from typing import Any

from chaos.config import ChaosConfig
from chaos.faults import KINDS


def assert_passed(report: dict[str, Any], config: ChaosConfig, log: str) -> None:
    """Every kind of fault happened; nothing accepted was refused or lost; every withdrawal is
    settled and, from the chain, paid exactly once for its amount (or terminal and unpaid)."""
    verdict = report["verdict"]
    for kind in KINDS:
        assert report["faults_injected"].get(kind, 0) >= 1, f"no {kind} fault\n{log}"
    assert sum(report["kills_per_service"].values()) >= config.min_kills, log
    assert report["withdrawals_accepted"] == config.withdrawals, log
    assert report["client_refused"] == {}, log
    assert report["quiesced"], f"not quiescent: {verdict['withdrawal_states']}\n{log}"
    assert verdict["double_payments"] == 0, log
    assert verdict["wrong_amounts"] == 0, log
    assert verdict["lost_withdrawals"] == 0, log
    assert verdict["contract_skips"] == 0, log
    assert verdict["paid_exactly_once"] + verdict["terminal_unpaid"] == config.withdrawals
    assert report["ok"]
