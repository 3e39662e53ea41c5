"""`make bench-batch` keeps working: a few hundred rows ingested (twice, the second with the
gateway's limits raised) and a few seconds of batches beside single creates, each on a harness
stack of its own. No timing is asserted here; the figures come from the full run on a quiet
machine. What must hold: every field is there, every row was stored and enqueued, and nothing
was paid twice or lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.batch import main as batch_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(900)]

INGEST_FIELDS = {
    "rows",
    "bytes",
    "transport",
    "status",
    "batch_id",
    "seconds",
    "rows_per_second",
    "accepted_count",
    "stored_rows",
    "queue_tasks",
    "queue_tasks_expected",
    "queue_lines",
    "all_stored_and_enqueued",
    "gateway_rss_before_mb",
    "gateway_rss_peak_sampled_mb",
    "gateway_vm_hwm_mb",
    "gateway_peak_mb",
    "gateway_growth_mb",
    "gateway_cpu_seconds",
    "gateway_limits",
}
SUSTAINED_FIELDS = {
    "batches_uploaded",
    "batch_rows_accepted",
    "batch_rows_per_second",
    "batch_upload_s",
    "single_accepted",
    "completed",
    "steady_window_s",
    "completed_per_minute",
    "completed_per_minute_batch_rows",
    "completed_per_minute_single",
    "submit_to_completed_s",
    "gas_per_withdrawal",
    "payouts",
    "cpu",
    "exactly_once",
}


def test_bench_batch_smoke(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    assert batch_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["config"]["confirmations"] == 5
    ingest = document["results"]["ingest"]
    assert set(ingest["files"]) == {"rows", "big_rows"}
    for name, item in ingest["files"].items():
        assert set(item) >= INGEST_FIELDS, (name, INGEST_FIELDS - set(item))
        assert item["all_stored_and_enqueued"], (name, item)
        assert item["queue_tasks"] == item["queue_tasks_expected"], (name, item)
        assert item["gateway_peak_mb"] > 0, (name, item)
    big = ingest["files"]["big_rows"]
    assert big["gateway_limits"]["GATEWAY_BATCH_MAX_ROWS"] >= big["rows"]
    assert "growth_ratio_big_to_rows" in ingest
    sustained = document["results"]["sustained"]
    assert set(sustained) >= SUSTAINED_FIELDS, SUSTAINED_FIELDS - set(sustained)
    assert sustained["batches_uploaded"] > 0 and sustained["batches_refused"] == 0
    assert sustained["batch_rows_stored"] == sustained["batch_rows_accepted"] > 0
    assert sustained["single_accepted"] > 0 and sustained["single_refused"] == 0
    assert set(sustained["submit_to_completed_s"]) == {"batch_rows", "single"}
    assert sustained["gas_per_withdrawal"] > 0
    for process in ("gateway", "processor", "signer", "monitor", "anvil", "generator"):
        assert sustained["cpu"][process]["cpu_seconds"] is not None, process
    verdict = sustained["exactly_once"]
    assert verdict["ok"], verdict
    assert (
        verdict["paid_exactly_once"]
        == sustained["batch_rows_stored"] + sustained["single_accepted"]
    )
    assert verdict["double_payments"] == verdict["lost_withdrawals"] == 0
    assert document["targets"]["exactly_once"] is True
