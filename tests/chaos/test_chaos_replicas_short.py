"""The chaos harness's short replica variant (`make chaos-replicas` runs the full one): two
gateways, two processors and two monitors, kills among them and every other kind of fault;
exactly-once judged from the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.config import SHORT_REPLICAS
from chaos.run import run
from tests.chaos.verdict import assert_passed


@pytest.mark.timeout(900)
def test_replicas_under_chaos_pay_every_withdrawal_exactly_once(tmp_path: Path) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        print(line)
        lines.append(line)

    report = run(SHORT_REPLICAS, var_dir=tmp_path / "chaos", out=out)
    log = "\n".join(lines)
    kills = report["kills_per_service"]
    assert {"gateway-2", "processor-2", "monitor-2"} <= set(kills), kills
    assert_passed(report, SHORT_REPLICAS, log)
