"""`make bench-seeing` keeps working: the plain and the seen variant for a few seconds at a low
rate on harness stacks of their own, and the seen one really seen: the receiver got spans
from the services, one state-change span per audit row, and Prometheus scraped every service
(`up == 1` for each target through its HTTP API, scrapes counted). No timing is asserted: the
figures come from a run on a quiet machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.seeing import OBSERVERS, PIPELINE
from bench.seeing import main as seeing_main

pytestmark = [pytest.mark.chain, pytest.mark.timeout(600)]


def test_bench_seeing_smoke(tmp_path: Path) -> None:
    out = tmp_path / "seeing.json"
    assert seeing_main(["--smoke", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    (round_one,) = document["rounds"]
    assert round_one["order"] == ["plain", "seen"]
    for name in ("plain", "seen"):
        result = round_one[name]
        assert result["scheduled"] == result["accepted"] == result["completed"] > 0, name
        assert result["refused"] == 0, name
        assert result["exactly_once"]["ok"], (name, result["exactly_once"])
        for process in ("gateway", "processor", "signer", "monitor", "webhooks", "generator"):
            assert result["cpu"][process]["cpu_seconds"] is not None, (name, process)
    plain, seen = round_one["plain"], round_one["seen"]
    assert "observed" not in plain
    assert not set(OBSERVERS) & set(plain["cpu"])
    for process in OBSERVERS:
        assert seen["cpu"][process]["cpu_seconds"] is not None, process

    # Every span exported at 100 %: each service's, and one per state change.
    tracing = seen["observed"]["tracing"]
    assert tracing["bad_requests"] == 0
    assert {"gateway", "processor", "signer", "monitor"} <= set(tracing["spans_by_service"])
    assert tracing["audit_rows"] >= 4 * seen["completed"]  # RECEIVED ... COMPLETED
    assert tracing["state_change_spans"] == tracing["audit_rows"]
    assert tracing["every_state_change_received"] is True
    assert tracing["spans"] > tracing["state_change_spans"]

    # Prometheus scraped every service's /metrics, successfully.
    prometheus = seen["observed"]["prometheus"]
    jobs = prometheus["targets"]
    assert set(jobs) >= {"gateway", "processor", "signer", "monitor"}
    assert prometheus["health"] == {job: "up" for job in jobs}, prometheus["last_errors"]
    assert prometheus["up"] == {job: 1.0 for job in jobs}
    for job in jobs:
        assert prometheus["scrapes"][job] >= 2, (job, prometheus["scrapes"])
        assert prometheus["scrapes_ok"][job] == prometheus["scrapes"][job], job
        assert prometheus["samples_per_scrape"][job] > 0, job

    # The pooled figures, the ratios and the verdict.
    summary = document["summary"]
    for name in ("plain", "seen"):
        assert summary[name]["completed"] == round_one[name]["completed"]
        assert summary[name]["cpu_per_1k_services_sum"] > 0
        assert set(PIPELINE) <= set(summary[name]["cpu_per_1k_completed"])
    assert document["ratios"]["completed_p95"] is not None
    assert document["ratios"]["cpu_per_1k_services_sum"] is not None
    verdict = document["verdict"]
    assert verdict["tolerance"] == 0.1
    assert verdict["within"] == (verdict["cpu_within"] and verdict["p95_within"])
