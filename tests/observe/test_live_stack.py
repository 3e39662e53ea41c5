"""Dashboards and Prometheus against a real stack: one `HarnessStack` (real processes, SQLite,
its own Redis and anvil) for the module, which pays one withdrawal over REST so that every
series the dashboards use has been exported at least once.

- Every dashboard panel's PromQL parses (`promtool check rules` on a generated rules file
  holding each expression as a recording rule), and names only metrics the live /metrics
  endpoints export (or a recording rule of ops/prometheus/alerts.yml).
- Debian's `prometheus` scraping the stack reports every target up and the alert rules loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.config import free_port
from devstack.harness import HarnessConfig, HarnessStack
from devstack.observe import ALERT_RULES, prometheus_argv, scrape_config

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "ops" / "grafana" / "dashboards"
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "le",
}
_IDENT = re.compile(r"(?<![\w:\"{.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")
_SERIES_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.MULTILINE)


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()


def _exported(stack: HarnessStack) -> set[str]:
    names: set[str] = set()
    for target in stack.metrics_targets.values():
        names |= set(_SERIES_NAME.findall(_get(f"http://{target}/metrics")))
    return names


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessStack]:
    config = HarnessConfig(
        var_dir=tmp_path_factory.mktemp("observe-stack"),
        database="sqlite",
        block_time=1.0,
        confirmations=1,
        env={"PROCESSOR_BATCH_MAX_WAIT_SECONDS": "0.2"},
    )
    with HarnessStack(config) as running:
        _pay_one(running)
        yield running


def _pay_one(stack: HarnessStack) -> None:
    """One withdrawal over REST, then wait until the monitor has exported its settlement."""
    body = json.dumps(
        {
            "token": "USDC",
            "recipientAddress": "0x1111111111111111111111111111111111111111",
            "amount": "1.5",
        }
    ).encode()
    request = urllib.request.Request(
        f"{stack.rest_base_url}/v1/withdrawals",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {stack.api_key}",
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + 90
    monitor = f"http://{stack.metrics_targets['monitor']}/metrics"
    while time.monotonic() < deadline:
        if "aws_payout_confirmation_seconds_count" in _get(monitor):
            return
        time.sleep(1)
    pytest.fail("the monitor exported no settled payout within 90 s:\n" + stack.log_tail("monitor"))


def dashboard_expressions() -> list[tuple[str, str]]:
    """(dashboard/panel title, expr) of every panel target of every dashboard."""
    found: list[tuple[str, str]] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names an expression refers to."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_labels = re.sub(r"\{[^}]*\}", "", without_ranges)
    without_groupings = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels
    )
    names = set()
    for match in _IDENT.finditer(without_groupings):
        name = match.group(1)
        following = without_groupings[match.end() :].lstrip()
        if following.startswith("("):  # a function
            continue
        if name in PROMQL_KEYWORDS or re.fullmatch(r"[0-9e]+", name):
            continue
        names.add(name)
    return names


def recording_rules() -> set[str]:
    rules: dict[str, Any] = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_dashboards_exist_with_provisioning() -> None:
    expected = {"overview", "pipeline", "chain-wallets", "webhooks"}
    assert {p.stem for p in DASHBOARDS.glob("*.json")} >= expected
    provisioning = REPO / "ops" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "asset-withdrawal.yml").read_text())
    assert providers["providers"][0]["options"]["path"].endswith("ops/grafana/dashboards")


def test_every_panel_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make prometheus-bin`"
    expressions = dashboard_expressions()
    assert expressions
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr}
                    for i, (_where, expr) in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_panel_names_only_metrics_the_stack_exports(stack: HarnessStack) -> None:
    exported = _exported(stack) | recording_rules() | {"up"}
    unknown = {
        where: sorted(metric_names(expr) - exported)
        for where, expr in dashboard_expressions()
        if metric_names(expr) - exported
    }
    assert unknown == {}


def test_alert_rules_name_only_metrics_the_stack_exports(stack: HarnessStack) -> None:
    rules: dict[str, Any] = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    exported = _exported(stack) | recording_rules() | {"up"}
    unknown = {
        rule.get("alert") or rule["record"]: sorted(metric_names(rule["expr"]) - exported)
        for group in rules["groups"]
        for rule in group["rules"]
        if metric_names(rule["expr"]) - exported
    }
    assert unknown == {}


def test_real_prometheus_scrapes_every_target_and_loads_the_alerts(
    stack: HarnessStack, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make prometheus-bin`"
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_config(stack.metrics_targets, scrape_interval="1s"))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        prometheus_argv(binary, config, tmp_path / "data", port), stdout=log, stderr=log
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 25
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                targets = json.loads(_get(f"{api}/targets"))["data"]["activeTargets"]
            except OSError:
                continue
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if len(health) == len(stack.metrics_targets) and set(health.values()) == {"up"}:
                break
        assert health == {job: "up" for job in stack.metrics_targets}
        groups = json.loads(_get(f"{api}/rules"))["data"]["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        rules: dict[str, Any] = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
        expected = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        assert loaded == expected
        # The scraped series are queryable: the gateway's RED counter for CreateWithdrawal.
        query = urllib.parse.quote('aws_http_server_requests_total{route="POST /v1/withdrawals"}')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            result = json.loads(_get(f"{api}/query?query={query}"))["data"]["result"]
            if result:
                break
            time.sleep(1)
        assert result, "the gateway's REST counter is not in Prometheus"
    finally:
        process.terminate()
        process.wait(20)
        log.close()
