"""One chaos run: start the stack, submit under faults, calm down, wait, judge, report."""

from __future__ import annotations

import json
import logging
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from devstack.exactly_once import check_exactly_once, non_terminal_count
from devstack.harness import HarnessConfig, HarnessStack

from .config import ChaosConfig
from .faults import FaultInjector
from .submitter import Submitter

log = logging.getLogger("chaos")
RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"


def run(config: ChaosConfig, *, var_dir: Path | None = None, out: Any = print) -> dict[str, Any]:
    """Run once; the report (also written to bench/results/chaos[-short].json)."""
    work = Path(var_dir or tempfile.mkdtemp(prefix="chaos-"))
    harness = HarnessConfig(
        var_dir=work,
        block_time=config.block_time,
        database=config.database,
        rpc_proxies=config.rpc_proxies,
        confirmations=config.confirmations,
        env=config.service_env,
        replicas=config.replicas,
    )
    out(f"chaos: configuration {json.dumps(asdict(config), sort_keys=True)}")
    out(f"chaos: python {platform.python_version()}, work dir {work}")
    started = time.monotonic()
    with HarnessStack(harness) as stack:
        out(f"chaos: stack up in {time.monotonic() - started:.1f}s ({stack.database_url})")
        w3 = stack.web3()
        faults = FaultInjector(stack, config, w3)
        submitter = Submitter(
            stack.gateway_targets,
            stack.api_key,
            config.withdrawals,
            config.submit_rate,
            seed=config.seed,
        )
        submitter.start()
        chaos_started = time.monotonic()
        while not (submitter.done.is_set() and faults.targets_met()):
            time.sleep(faults.random.expovariate(1.0 / config.fault_interval_seconds))
            before = len(faults.events)
            faults.submitting = not submitter.done.is_set()
            faults.inject()
            if len(faults.events) > before:
                out(f"chaos: +{time.monotonic() - chaos_started:6.1f}s {faults.events[-1][1]}")
        faults.calm()
        submitter.join(config.quiescence_timeout_seconds)
        calm_at = time.monotonic()
        out(
            f"chaos: faults stopped after {calm_at - chaos_started:.1f}s; "
            f"{submitter.stats.accepted} accepted; waiting for quiescence"
        )
        sessions = stack.sessions()
        remaining = non_terminal_count(sessions)
        while remaining and time.monotonic() - calm_at < config.quiescence_timeout_seconds:
            time.sleep(1.0)
            remaining = non_terminal_count(sessions)
        quiescence = time.monotonic() - calm_at
        verdict = check_exactly_once(
            w3,
            sessions,
            stack.result.token_address,
            stack.result.payout_vault,
            submitter.submitted,
            check_balances=True,
        )
        report: dict[str, Any] = {
            "configuration": asdict(config),
            "withdrawals_accepted": submitter.stats.accepted,
            "client_retries": submitter.stats.retries,
            "client_refused": submitter.stats.refused,
            "kills_per_service": dict(stack.kills),
            "service_restarts": {name: stack.restarts(name) for name in stack.kills},
            "faults_injected": dict(faults.injected),
            "reorgs_by_depth": {str(k): v for k, v in sorted(faults.reorg_depths.items())},
            "reorgs_removing_our_transactions": faults.reorgs_removing_ours,
            "our_transactions_reorged": faults.our_transactions_reorged,
            "rpc_faults_by_kind": dict(faults.rpc_faults()),
            "rpc_faults_total": faults.rpc_fault_total(),
            "quiesced": remaining == 0,
            "time_to_quiescence_seconds": round(quiescence, 1),
            "chaos_seconds": round(calm_at - chaos_started, 1),
            "verdict": verdict.summary(),
            "ok": verdict.ok and remaining == 0 and not submitter.stats.refused,
            "timeline": [(round(t, 1), e) for t, e in faults.events],
        }
    _print_report(report, out)
    name = "chaos-short.json" if config.withdrawals < 500 else "chaos.json"
    if config.replicas:
        name = name.replace("chaos", "chaos-replicas", 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / name).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    out(f"chaos: report written to {RESULTS_DIR / name}")
    return report


def _print_report(report: dict[str, Any], out: Any) -> None:
    verdict = report["verdict"]
    rows = [
        ("withdrawals accepted", report["withdrawals_accepted"]),
        ("paid exactly once (chain)", verdict["paid_exactly_once"]),
        ("terminal and unpaid", verdict["terminal_unpaid"]),
        ("replicas", report["configuration"]["replicas"] or "one process each"),
        ("kills per service", report["kills_per_service"]),
        ("reorgs (by depth)", report["reorgs_by_depth"]),
        ("reorgs taking our txs", report["reorgs_removing_our_transactions"]),
        ("our txs reorged away", report["our_transactions_reorged"]),
        ("RPC faults by kind", report["rpc_faults_by_kind"]),
        ("RPC faults total", report["rpc_faults_total"]),
        ("other faults", report["faults_injected"]),
        ("withdrawals moved by reorgs", verdict["reorged_moves"]),
        ("stuck replacements", verdict["stuck_replacements"]),
        ("NOOP nonces", verdict["noop_nonces"]),
        ("client retries", report["client_retries"]),
        ("DOUBLE PAYMENTS", verdict["double_payments"]),
        ("WRONG AMOUNTS", verdict["wrong_amounts"]),
        ("LOST WITHDRAWALS", verdict["lost_withdrawals"]),
        ("CONTRACT SKIPS", verdict["contract_skips"]),
        ("time to quiescence (s)", report["time_to_quiescence_seconds"]),
        ("chaos duration (s)", report["chaos_seconds"]),
        ("withdrawal states", verdict["withdrawal_states"]),
        ("payout states", verdict["payout_states"]),
    ]
    out("chaos: results")
    for label, value in rows:
        out(f"  {label:<28} {value}")
    out(f"chaos: {'PASS' if report['ok'] else 'FAIL'}")
