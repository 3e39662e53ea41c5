"""The cost of seeing: `make bench-e2e`'s load with every span exported and the metrics
scraped, against the same load unobserved, in one invocation.

    python -m bench.seeing                            # 5 min at 220/s each (make bench-seeing)
    python -m bench.seeing --rate 50 --duration 30    # shorter
    python -m bench.seeing --rounds 3                 # plain+seen, seen+plain, plain+seen
    python -m bench.seeing --smoke                    # seconds at a low rate (run by make test)

Both variants are `bench.e2e`'s batched variant, run by its `run_variant` (a `HarnessStack` of
their own, the open-loop gRPC generators, the same measurements and exactly-once verdict).
They differ only in who watches:

- plain: `make bench-e2e`'s services as they are: no OTLP endpoint (the
  `OTEL_EXPORTER_OTLP_*ENDPOINT` variables emptied, so tracing is off whatever the environment
  says), the metrics recorded and served on /metrics as always, nobody scraping them. Not
  `OTEL_SDK_DISABLED=true`: that turns the OpenTelemetry metrics SDK off too (every instrument
  a no-op, /metrics without the services' own series), so the plain run would skip the
  metrics' recording that every run of the services pays;
- seen: every service exports its spans over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`) to
  `devstack.otlp_receiver`, a process of its own on loopback, with
  `OTEL_TRACES_SAMPLER=always_on` (every span of every trace; the batch span processor at the
  SDK's defaults unless `OTEL_BSP_*` is set in the environment), and Debian's `prometheus`
  with `devstack.observe`'s configuration (every service's /metrics, the alert rules) scrapes
  every `--scrape-interval` seconds.

Reported per variant: COMPLETED per minute (steady window), submit -> COMPLETED p50/p95,
the API answer p95, and CPU seconds per 1,000 COMPLETED of each process: the four services,
the webhook sender, anvil, the harness's redis-server, mariadbd (shared with whatever else
uses the machine's MariaDB) and the generators, whose sum is the pipeline's; the receiver and
Prometheus apart (in production the collector and Prometheus run elsewhere). Then the ratios
seen/plain of that CPU sum and of the p95, each judged against "within 10 %"
(0.9 <= ratio <= 1.1).

What makes the seen variant a real one is checked and reported too: the receiver got a
state-change span for every audit row of the run (the exporters dropped none), and Prometheus
answers `up == 1` for every target, with the scrapes it made during the run counted.

With `--rounds N` the order alternates (plain first, then seen first, ...), so drift of the
machine falls on both; the figures per variant pool the rounds (CPU seconds summed over
COMPLETED summed, throughput the mean, percentiles the median of the rounds'). Writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.e2e import (
    CONFIRMATIONS,
    RESULTS,
    SERVICE_NAMES,
    Attached,
    Variant,
    run_variant,
)
from bench.load import sayer, uptime_load, versions

PIPELINE = (*SERVICE_NAMES, "anvil", "redis", "mariadbd", "generator")
"""The processes whose CPU per 1,000 COMPLETED is summed and compared."""
OBSERVERS = ("otlp_receiver", "prometheus")
"""Reported apart: in production they run elsewhere."""
PLAIN_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}
"""Tracing off (no endpoint: `withdrawal_shared.tracing.wanted()`), the metrics SDK left on."""
TOLERANCE = 0.10
SPANS_WAIT_S = 30.0
"""How long the end of a run waits for the last spans (the SDK exports every 5 s by default)."""


# ----------------------------------------------------------------------------- the seen variant


@contextlib.contextmanager
def _prometheus(args: argparse.Namespace, receiver: Any, stack: Any) -> Iterator[Attached]:
    """Prometheus scraping `stack` (started once it is up); reports what both observers saw."""
    from devstack.config import free_port
    from devstack.observe import prometheus_argv, scrape_config

    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: run `make prometheus-bin`")
    home = Path(stack.var_dir) / "prometheus"
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    targets: dict[str, str] = dict(stack.metrics_targets)
    config.write_text(
        scrape_config(targets, scrape_interval=f"{args.scrape_interval:g}s"), encoding="utf-8"
    )
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with (stack.logs_dir / "prometheus.log").open("ab") as log:
        # The binary found on PATH, our own generated config and directories.
        process = subprocess.Popen(
            prometheus_argv(binary, config, home / "data", port), stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                _get(f"{api}/-/ready")
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready (logs in {stack.logs_dir})")
            time.sleep(0.2)
        started = time.time()
        report = functools.partial(_observed, stack, receiver, api, targets, started, args)
        yield Attached(
            pids={"otlp_receiver": receiver.pid, "prometheus": process.pid}, report=report
        )
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(home / "data", ignore_errors=True)


def _observed(
    stack: Any,
    receiver: Any,
    api: str,
    targets: dict[str, str],
    started: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """At the end of the load: the spans received (once a span of every state change has
    arrived, or after `SPANS_WAIT_S`), and what Prometheus scraped."""
    from withdrawal_shared.db.models import WithdrawalAudit

    with stack.sessions()() as session:
        audit_rows = int(session.scalar(select(func.count()).select_from(WithdrawalAudit)) or 0)
    deadline = time.monotonic() + SPANS_WAIT_S
    while True:
        spans = receiver.stats()
        if spans["state_change_spans"] >= audit_rows or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    at = time.time()
    window = max(1, math.ceil(at - started))

    def by_job(query: str) -> dict[str, float]:
        # Every query evaluated at the same instant, so that the counts over the window
        # (scrapes made, scrapes that succeeded) cover the same scrapes.
        found = json.loads(
            _get(f"{api}/api/v1/query?query={urllib.parse.quote(query)}&time={at:.3f}")
        )
        return {r["metric"].get("job", ""): float(r["value"][1]) for r in found["data"]["result"]}

    active = json.loads(_get(f"{api}/api/v1/targets"))["data"]["activeTargets"]
    return {
        "tracing": {
            **spans,
            "audit_rows": audit_rows,
            "every_state_change_received": spans["state_change_spans"] >= audit_rows,
        },
        "prometheus": {
            "scrape_interval_s": args.scrape_interval,
            "targets": sorted(targets),
            "health": {t["labels"]["job"]: t["health"] for t in active},
            "last_errors": {t["labels"]["job"]: t["lastError"] for t in active if t["lastError"]},
            "up": by_job("up"),
            "window_s": window,
            "scrapes": by_job(f"count_over_time(up[{window}s])"),
            "scrapes_ok": by_job(f"sum_over_time(up[{window}s])"),
            "samples_per_scrape": by_job("scrape_samples_scraped"),
            "scrape_duration_s_avg": {
                job: round(v, 4)
                for job, v in by_job(f"avg_over_time(scrape_duration_seconds[{window}s])").items()
            },
        },
    }


def _get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()


def run_plain(args: argparse.Namespace, batch_items: int) -> dict[str, Any]:
    variant = Variant(
        "plain",
        batch_items,
        args.drain,
        must_drain=True,
        env=PLAIN_ENV,
        confirmations=args.confirmations,
        block_time=args.block_time,
    )
    return run_variant(args, variant)


def run_seen(args: argparse.Namespace, batch_items: int) -> dict[str, Any]:
    import tempfile

    from devstack.config import free_port
    from devstack.otlp_receiver import ReceiverProcess

    log = Path(tempfile.mkdtemp(prefix="bench-seeing-receiver-")) / "otlp-receiver.log"
    env = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "always_on",
        **args.otel_env,
    }
    with ReceiverProcess(free_port(), log_path=log) as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{receiver.url}/v1/traces"
        variant = Variant(
            "seen",
            batch_items,
            args.drain,
            must_drain=True,
            env=env,
            confirmations=args.confirmations,
            block_time=args.block_time,
        )
        attach = functools.partial(_prometheus, args, receiver)
        return run_variant(args, variant, attach)


# ----------------------------------------------------------------------------- pooling, verdict


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's rounds together (see the module docstring)."""
    completed = sum(int(r["completed"]) for r in runs)
    names = sorted({name for r in runs for name in r["cpu"]})
    cpu: dict[str, float | None] = {}
    for name in names:
        seconds = [r["cpu"].get(name, {}).get("cpu_seconds") for r in runs]
        if any(s is None for s in seconds) or completed == 0:
            cpu[name] = None
        else:
            cpu[name] = round(sum(s for s in seconds if s is not None) / (completed / 1000), 3)

    def total(processes: tuple[str, ...]) -> float | None:
        values = [cpu.get(name) for name in processes]
        if any(v is None for v in values):
            return None
        return round(sum(v for v in values if v is not None), 3)

    def median(key: str, pct: str) -> float | None:
        values: list[float | None] = [r[key][pct] for r in runs]
        if any(v is None for v in values):  # some withdrawal never completed
            return None
        return round(statistics.median(v for v in values if v is not None), 3)

    return {
        "rounds": len(runs),
        "completed": completed,
        "accepted": sum(int(r["accepted"]) for r in runs),
        "completed_per_minute": round(statistics.mean(r["completed_per_minute"] for r in runs), 1),
        "completed_p50_s": median("completed_s", "p50"),
        "completed_p95_s": median("completed_s", "p95"),
        "api_answer_p95_s": median("api_answer_s", "p95"),
        "cpu_per_1k_completed": cpu,
        "cpu_per_1k_pipeline_sum": total(PIPELINE),
        "cpu_per_1k_services_sum": total(SERVICE_NAMES),
        "exactly_once": all(r["exactly_once"]["ok"] for r in runs),
    }


def _ratio(seen: float | None, plain: float | None) -> float | None:
    if seen is None or plain is None or plain == 0:
        return None
    return round(seen / plain, 3)


def judge(plain: dict[str, Any], seen: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ratios seen/plain, and the verdicts on the two the issue names."""
    ratios = {
        "cpu_per_1k_pipeline_sum": _ratio(
            seen["cpu_per_1k_pipeline_sum"], plain["cpu_per_1k_pipeline_sum"]
        ),
        "completed_p95": _ratio(seen["completed_p95_s"], plain["completed_p95_s"]),
        "cpu_per_1k_services_sum": _ratio(
            seen["cpu_per_1k_services_sum"], plain["cpu_per_1k_services_sum"]
        ),
        "api_answer_p95": _ratio(seen["api_answer_p95_s"], plain["api_answer_p95_s"]),
        "completed_per_minute": _ratio(seen["completed_per_minute"], plain["completed_per_minute"]),
    }

    def within(ratio: float | None) -> bool:
        return ratio is not None and 1 - TOLERANCE <= ratio <= 1 + TOLERANCE

    verdict = {
        "tolerance": TOLERANCE,
        "cpu_within": within(ratios["cpu_per_1k_pipeline_sum"]),
        "p95_within": within(ratios["completed_p95"]),
    }
    verdict["within"] = verdict["cpu_within"] and verdict["p95_within"]
    return ratios, verdict


def print_table(
    plain: dict[str, Any], seen: dict[str, Any], ratios: dict[str, Any], verdict: dict[str, Any]
) -> None:
    def fmt(v: Any, unit: str = "") -> str:
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        if isinstance(v, float):
            return f"{v:.2f}{unit}" if unit == "s" else f"{v:,.3f}"
        return f"{v:,}"

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows: list[tuple[str, Any, Any, str, str]] = [
        (
            "COMPLETED per minute (steady)",
            plain["completed_per_minute"],
            seen["completed_per_minute"],
            "",
            ratio(ratios["completed_per_minute"]),
        ),
        (
            "completed / accepted",
            f"{plain['completed']}/{plain['accepted']}",
            f"{seen['completed']}/{seen['accepted']}",
            "",
            "",
        ),
        ("submit -> COMPLETED p50", plain["completed_p50_s"], seen["completed_p50_s"], "s", ""),
        (
            "submit -> COMPLETED p95",
            plain["completed_p95_s"],
            seen["completed_p95_s"],
            "s",
            ratio(ratios["completed_p95"]),
        ),
        (
            "API answer p95 (from schedule)",
            plain["api_answer_p95_s"],
            seen["api_answer_p95_s"],
            "s",
            ratio(ratios["api_answer_p95"]),
        ),
    ]
    for name in PIPELINE:
        rows.append(
            (
                f"CPU s / 1k COMPLETED: {name}",
                plain["cpu_per_1k_completed"].get(name),
                seen["cpu_per_1k_completed"].get(name),
                "",
                ratio(
                    _ratio(
                        seen["cpu_per_1k_completed"].get(name),
                        plain["cpu_per_1k_completed"].get(name),
                    )
                ),
            )
        )
    rows.append(
        (
            "CPU s / 1k: services sum",
            plain["cpu_per_1k_services_sum"],
            seen["cpu_per_1k_services_sum"],
            "",
            ratio(ratios["cpu_per_1k_services_sum"]),
        )
    )
    rows.append(
        (
            "CPU s / 1k: pipeline sum",
            plain["cpu_per_1k_pipeline_sum"],
            seen["cpu_per_1k_pipeline_sum"],
            "",
            ratio(ratios["cpu_per_1k_pipeline_sum"]),
        )
    )
    for name in OBSERVERS:
        rows.append(
            (f"CPU s / 1k (apart): {name}", None, seen["cpu_per_1k_completed"].get(name), "", "")
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}} | {'plain':>12} | {'seen':>12} | {'seen/plain':>10}")
    print("-" * (width + 45))
    for label, p, s, unit, r in rows:
        print(f"{label:<{width}} | {fmt(p, unit):>12} | {fmt(s, unit):>12} | {r:>10}")
    band = f"{1 - TOLERANCE:.2f}..{1 + TOLERANCE:.2f}"
    print(
        f"within 10 % ({band}): CPU sum {ratio(ratios['cpu_per_1k_pipeline_sum'])} "
        f"{'yes' if verdict['cpu_within'] else 'NO'}; p95 {ratio(ratios['completed_p95'])} "
        f"{'yes' if verdict['p95_within'] else 'NO'}"
    )


def _print_observed(result: dict[str, Any]) -> None:
    observed = result.get("observed")
    if not observed:
        return
    tracing, prometheus = observed["tracing"], observed["prometheus"]
    print(
        f"[seen] spans received {tracing['spans']:,} in {tracing['requests']:,} exports "
        f"({tracing['bytes'] / 1e6:.1f} MB; {tracing['spans_by_service']}); state-change spans "
        f"{tracing['state_change_spans']:,} for {tracing['audit_rows']:,} audit rows; "
        f"prometheus up={prometheus['up']} scrapes ok/made={prometheus['scrapes_ok']}/"
        f"{prometheus['scrapes']} samples/scrape={prometheus['samples_per_scrape']}"
    )


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=220.0, help="withdrawals per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of submissions")
    parser.add_argument("--rounds", type=int, default=1, help="plain+seen pairs, order alternating")
    parser.add_argument(
        "--scrape-interval", type=float, default=2.0, help="Prometheus scrape interval, seconds"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="s excluded from the steady window (default min(60, duration/5))",
    )
    parser.add_argument("--drain", type=float, default=180.0, help="s to wait for a run to finish")
    parser.add_argument(
        "--batch-max-items",
        type=int,
        default=None,
        help="PROCESSOR_BATCH_MAX_ITEMS (default: the processor's)",
    )
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--progress-seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="a few seconds at a low rate")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.confirmations, args.block_time = CONFIRMATIONS, 2.0
    args.otel_env = {}
    if args.smoke:
        args.rate, args.duration, args.drain, args.generators = 5.0, 3.0, 60.0, 1
        args.progress_seconds, args.scrape_interval = 5.0, 1.0
        # Seconds, not minutes: one confirmation of 1-second blocks, spans exported at once.
        args.confirmations, args.block_time = 1, 1.0
        args.otel_env = {"OTEL_BSP_SCHEDULE_DELAY": "200"}
    args.py_spy, args.profile_dir = "", ""  # run_variant's profiler: not here
    from svc_processor.settings import ProcessorSettings

    batch_items = args.batch_max_items or ProcessorSettings().batch_max_items
    config = {
        "benchmark": "seeing",
        "variants": {
            "plain": "no OTLP endpoint (tracing off); metrics recorded, /metrics served, "
            "not scraped",
            "seen": "OTLP/HTTP export of every span (OTEL_TRACES_SAMPLER=always_on) to a "
            "receiver process on loopback; Prometheus scraping every service",
        },
        "scrape_interval_s": args.scrape_interval,
        "otel_bsp": {k: v for k, v in os.environ.items() if k.startswith("OTEL_BSP_")}
        | {k: v for k, v in args.otel_env.items() if k.startswith("OTEL_BSP_")}
        or "SDK defaults",
        "rounds": args.rounds,
        "payout_size_max": batch_items,
        "confirmations": args.confirmations,
        "block_time_s": args.block_time,
        "hot_wallets": 2,
        "database": "MariaDB (a database of its own on 127.0.0.1:3306)",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "generator_processes": args.generators,
        "log_level": args.log_level,
        "cpus": os.cpu_count(),
        "load_at_start": uptime_load(),
        "versions": versions(),
        "smoke": args.smoke,
    }
    print("configuration:", json.dumps(config), flush=True)
    say = sayer("seeing")
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = ("plain", "seen") if index % 2 == 0 else ("seen", "plain")
        say(f"round {index + 1} of {args.rounds}: {' then '.join(order)}")
        done: dict[str, Any] = {"round": index + 1, "order": list(order)}
        for name in order:
            run = run_plain if name == "plain" else run_seen
            done[name] = run(args, batch_items)
            if name == "seen":
                _print_observed(done[name])
        rounds.append(done)
    summary = {name: pooled([r[name] for r in rounds]) for name in ("plain", "seen")}
    ratios, verdict = judge(summary["plain"], summary["seen"])
    print_table(summary["plain"], summary["seen"], ratios, verdict)
    print("verdict:", json.dumps(verdict), flush=True)
    out = args.out or RESULTS / f"seeing{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "config": config,
        "rounds": rounds,
        "summary": summary,
        "ratios": ratios,
        "verdict": verdict,
        "load_at_end": uptime_load(),
        "time": time.time(),
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
