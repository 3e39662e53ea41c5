"""`make bench-webhooks` keeps working: a few seconds at a low rate on a harness stack of its
own, every event of every withdrawal delivered to the receiver process, verified, in order.
No timing is asserted here; the figures come from the full run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.webhooks import main as webhooks_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(600)]


def test_bench_webhooks_smoke(tmp_path: Path) -> None:
    out = tmp_path / "webhooks.json"
    assert webhooks_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    result = document["result"]
    assert result["scheduled"] == result["accepted"] > 0
    # RECEIVED ... COMPLETED: seven events per withdrawal, every one delivered once.
    assert result["events_expected"] >= 7 * result["accepted"]
    assert result["events_delivered"] == result["events_expected"]
    assert result["events_missing"] == result["events_unexpected"] == 0
    assert result["bad_signatures"] == result["out_of_order"] == 0
    assert result["attempts_by_outcome"].get("SUCCEEDED", 0) >= result["events_delivered"]
    assert result["lag_s"]["never"] == 0 and result["lag_s"]["p95"] is not None
    for process in ("webhooks", "receiver", "gateway", "processor"):
        assert result["cpu"][process]["cpu_seconds"] is not None, process
    assert document["targets"]["every_event_delivered"] is True
    assert document["targets"]["in_order"] is True
