"""End to end: withdrawals submitted over gRPC at a fixed rate until they are COMPLETED on chain,
batched through the PayoutVault against the same pipeline paying one withdrawal per
transaction (the baseline), in the same invocation.

    python -m bench.e2e                              # 5 min at 220/s each (make bench-e2e)
    python -m bench.e2e --rate 50 --duration 20      # shorter
    python -m bench.e2e --smoke                      # seconds at a low rate (run by make test)

Each variant gets a `HarnessStack` of its own (own Redis, own MariaDB database, anvil with
2-second blocks and a 60M block gas limit, the four services and the webhook sender as real
processes) with the chain's confirmation depth at 5. The only difference is
`PROCESSOR_BATCH_MAX_ITEMS` (1 for the baseline, whose nonces are still pipelined: up to
`PROCESSOR_MAX_IN_FLIGHT_PER_WALLET` per hot wallet).

Open loop: submission i is scheduled at `t0 + i / rate` whatever happened to the earlier ones
(several generator processes, each an asyncio gRPC client, share the schedule), and every
latency is measured from the scheduled time, so a slow gateway shows up as latency instead of
silently lowering the offered rate. The generator's own lag (sent - scheduled) is printed.

Measured per variant:
- COMPLETED per minute sustained: COMPLETED audit rows whose time falls in the steady window
  [t0 + warmup, t0 + duration], per minute;
- submit -> first inclusion: the timestamp of the block that first mined its payout
  transaction (`payout_transactions.block_number`), minus the scheduled submit time;
- submit -> COMPLETED: the time of the audit row of its move to COMPLETED, minus the same;
- gas per withdrawal: the receipts' gasUsed (as the monitor stored it) over the items paid;
- CPU seconds per 1,000 COMPLETED withdrawals of each process (utime + stime from
  /proc/<pid>/stat between t0 and the end: the four services, the webhook sender, anvil, the
  harness's redis-server, the generator, and mariadbd, which other users of the machine's
  MariaDB share);
- the exactly-once verdict read from the chain's Transfer logs, then the database
  (`devstack.exactly_once`).

A withdrawal not COMPLETED when the variant stops counts as infinitely late in the percentiles
(the baseline cannot drain a backlog of minutes: it stops `--baseline-drain` seconds after the
last submission). Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.load import (
    AMOUNT,
    GeneratorReport,
    Submission,
    epoch,
    exactly_once,
    run_generators,
    sayer,
    uptime_load,
    versions,
)
from bench.processes import mariadb_pid

RESULTS = Path(__file__).resolve().parent / "results"
CONFIRMATIONS = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "completed_per_minute": 12_000,
    "ratio_to_baseline": 10.0,
    "first_inclusion_p95_s": 10.0,
    "completed_p95_s": 30.0,
}


@dataclass(frozen=True)
class Variant:
    name: str
    batch_max_items: int
    drain_seconds: float
    must_drain: bool
    """The batched run must end with every withdrawal terminal; the baseline cannot drain a
    backlog of many minutes and is stopped with it in flight."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to every service's environment (`bench.seeing`: tracing on or off)."""
    confirmations: int = CONFIRMATIONS
    block_time: float = 2.0
    replicas: Mapping[str, int] = field(default_factory=dict)
    """`HarnessConfig.replicas`: e.g. two processors sharing the partitions (`--processors`)."""


@dataclass
class Attached:
    """What a caller runs beside a variant's stack once it is up (`bench.seeing`: Prometheus
    scraping it): its processes, whose CPU is measured like the stack's, and a report read at
    the end of the load while the stack still runs (`result["observed"]`)."""

    pids: dict[str, int | None] = field(default_factory=dict)
    report: Callable[[], dict[str, Any]] | None = None


Attach = Callable[[Any], contextlib.AbstractContextManager[Attached]]
"""Given the running `HarnessStack`, a context that starts (and at its end stops) what runs
beside it."""


# ----------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of `pid` (and its waited-for children), or None when it is gone."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14-17.
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def process_pids(stack: Any) -> dict[str, int | None]:
    pids: dict[str, int | None] = {name: stack.pid(name) for name in stack.service_names}
    pids["anvil"] = stack.anvil.pid
    redis_process = stack.redis.process if stack.redis is not None else None
    pids["redis"] = redis_process.pid if redis_process is not None else None
    pids["mariadbd"] = mariadb_pid(stack.database_url)
    return pids


SERVICE_NAMES = ("gateway", "processor", "signer", "monitor", "webhooks")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; `inf` entries (never completed) sort last."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- one variant


def run_variant(
    args: argparse.Namespace, variant: Variant, attach: Attach | None = None
) -> dict[str, Any]:
    """One stack, one load, its measurements (see the module docstring); `attach` starts
    what runs beside the stack (see `Attached`)."""
    from devstack.harness import HarnessConfig, HarnessStack

    var_dir = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{variant.name}-"))
    env = {
        "PROCESSOR_BATCH_MAX_ITEMS": str(variant.batch_max_items),
        "LOG_LEVEL": args.log_level,
        **variant.env,
    }
    config = HarnessConfig(
        var_dir=var_dir,
        confirmations=variant.confirmations,
        block_time=variant.block_time,
        env=env,
        replicas=variant.replicas,
    )
    count = int(args.rate * args.duration)
    say = sayer(variant.name)
    say(f"starting the stack (logs in {var_dir / 'logs'}) ...")
    started = time.monotonic()
    with (
        HarnessStack(config) as stack,
        (attach or _nothing_attached)(stack) as attached,
    ):
        say(f"stack up in {time.monotonic() - started:.1f} s; load {uptime_load()}")
        pids = {**process_pids(stack), **attached.pids}
        t0 = time.time() + 2.0
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        holder: dict[str, GeneratorReport] = {}
        run_id = secrets.token_hex(6)

        def generate() -> None:
            holder["report"] = run_generators(
                stack.grpc_target, stack.api_key, run_id, t0, args.rate, count, args.generators
            )

        thread = threading.Thread(target=generate, name="generators", daemon=True)
        thread.start()
        profilers = _start_profilers(args, variant, pids, t0)
        _follow(stack, args, variant, t0, count, thread, say)
        thread.join()
        for profiler in profilers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
        cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        observed = attached.report() if attached.report is not None else None
        report = holder["report"]
        accepted = [s for s in report.submissions if s.withdrawal_id]
        say(f"{len(accepted)} of {count} accepted; reading the results ...")
        result: dict[str, Any] = {
            "variant": variant.name,
            "batch_max_items": variant.batch_max_items,
            "scheduled": count,
            "accepted": len(accepted),
            "refused": len(report.submissions) - len(accepted),
            "refusals": sorted({s.error for s in report.submissions if s.error}),
            **_timings(stack, args, t0, report, accepted),
        }
        result["cpu"] = _cpu(cpu_before, cpu_after, report.cpu_seconds, result["completed"])
        result["restarts"] = {name: stack.restarts(name) for name in stack.service_names}
        result["treasury_safe"] = stack.result.treasury_safe
        result["vault_owner"] = stack.vault_owner
        if observed is not None:
            result["observed"] = observed
        result["load_at_end"] = uptime_load()
        result["wall_seconds"] = round(time.time() - t0, 1)
        say("exactly-once check against the chain's Transfer logs ...")
        result["exactly_once"] = exactly_once(stack, accepted, drained=variant.must_drain)
        say(f"done; load {uptime_load()}")
    return result


@contextlib.contextmanager
def _nothing_attached(stack: Any) -> Iterator[Attached]:
    yield Attached()


def _follow(
    stack: Any,
    args: argparse.Namespace,
    variant: Variant,
    t0: float,
    count: int,
    generators: threading.Thread,
    say: Any,
) -> None:
    """Print progress until every withdrawal is terminal or the drain time is over."""
    from withdrawal_shared.db.models import Withdrawal
    from withdrawal_shared.states import TERMINAL, State

    sessions = stack.sessions()
    drain_deadline = t0 + args.duration + variant.drain_seconds
    while True:
        time.sleep(min(args.progress_seconds, max(0.5, drain_deadline - time.time())))
        with sessions() as session:
            by_state = {
                State(state): int(n)
                for state, n in session.execute(
                    select(Withdrawal.state, func.count()).group_by(Withdrawal.state)
                ).all()
            }
        terminal = sum(n for state, n in by_state.items() if state in TERMINAL)
        elapsed = time.time() - t0
        say(
            f"t={elapsed:6.1f}s scheduled={min(count, max(0, int(elapsed * args.rate)))} "
            f"stored={sum(by_state.values())} open={sum(by_state.values()) - terminal} "
            f"completed={by_state.get(State.COMPLETED, 0)} load {uptime_load()}"
        )
        if not generators.is_alive() and (terminal >= count or time.time() >= drain_deadline):
            return


def _timings(
    stack: Any,
    args: argparse.Namespace,
    t0: float,
    report: GeneratorReport,
    accepted: list[Submission],
) -> dict[str, Any]:
    """Throughput, latencies from the scheduled times, payout sizes and gas."""
    from withdrawal_shared.db.models import (
        PayoutItem,
        PayoutTransaction,
        Withdrawal,
        WithdrawalAudit,
    )
    from withdrawal_shared.states import State

    ids = [s.withdrawal_id for s in accepted]
    completed_at: dict[str, float] = {}
    payout_of: dict[str, str | None] = {}
    with stack.sessions()() as session:
        for start in range(0, len(ids), 2_000):
            chunk = ids[start : start + 2_000]
            for withdrawal_id, occur in session.execute(
                select(WithdrawalAudit.withdrawal_id, WithdrawalAudit.occur_time).where(
                    WithdrawalAudit.to_state == State.COMPLETED.value,
                    WithdrawalAudit.withdrawal_id.in_(chunk),
                )
            ).all():
                completed_at[withdrawal_id] = epoch(occur)
            payout_of.update(
                session.execute(
                    select(Withdrawal.id, Withdrawal.payout_tx_id).where(Withdrawal.id.in_(chunk))
                ).all()
            )
        payouts = session.execute(
            select(
                PayoutTransaction.id,
                PayoutTransaction.block_number,
                PayoutTransaction.gas_used,
                PayoutTransaction.kind,
            )
        ).all()
        paid_items = dict(
            session.execute(
                select(PayoutItem.payout_tx_id, func.count())
                .where(PayoutItem.outcome == "PAID")
                .group_by(PayoutItem.payout_tx_id)
            ).all()
        )
    w3 = stack.web3()
    block_of = {p.id: p.block_number for p in payouts if p.block_number is not None}
    block_time = {n: float(w3.eth.get_block(n)["timestamp"]) for n in set(block_of.values())}
    inclusion: list[float] = []
    to_completed: list[float] = []
    for s in accepted:
        payout = payout_of.get(s.withdrawal_id)
        block = block_of.get(payout) if payout else None
        inclusion.append(block_time[block] - s.scheduled if block is not None else math.inf)
        done = completed_at.get(s.withdrawal_id)
        to_completed.append(done - s.scheduled if done is not None else math.inf)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.duration / 5)
    start, end = t0 + warmup, t0 + args.duration
    in_window = sum(1 for t in completed_at.values() if start <= t < end)
    paying = [p for p in payouts if p.kind in ("vault", "transfer") and p.gas_used]
    sizes = [int(paid_items.get(p.id, 0)) for p in paying]
    lag = [s.sent - s.scheduled for s in report.submissions]
    return {
        "completed": len(completed_at),
        "steady_window_s": [round(warmup, 1), round(args.duration, 1)],
        "completed_per_minute": round(in_window / ((end - start) / 60), 1) if end > start else 0,
        "first_inclusion_s": _pcts(inclusion),
        "completed_s": _pcts(to_completed),
        "api_answer_s": _pcts([s.answered - s.scheduled for s in accepted]),
        "generator_lag_s": {**_pcts(lag), "max": round(max(lag), 3) if lag else None},
        "payouts": len(paying),
        "payout_items_mean": round(sum(sizes) / len(sizes), 1) if sizes else 0,
        "payout_items_max": max(sizes) if sizes else 0,
        "gas_per_withdrawal": round(sum(int(p.gas_used) for p in paying) / sum(sizes))
        if sum(sizes)
        else None,
    }


def _cpu(
    before: dict[str, float | None],
    after: dict[str, float | None],
    generator_seconds: float,
    completed: int,
) -> dict[str, dict[str, float | None]]:
    """CPU seconds of each process over the run, and per 1,000 COMPLETED withdrawals."""
    used: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        used[name] = end - start if start is not None and end is not None else None
    used["generator"] = generator_seconds
    return {
        name: {
            "cpu_seconds": None if seconds is None else round(seconds, 2),
            "per_1k_completed": None
            if seconds is None or completed == 0
            else round(seconds / (completed / 1000), 3),
        }
        for name, seconds in used.items()
    }


def _start_profilers(
    args: argparse.Namespace, variant: Variant, pids: dict[str, int | None], t0: float
) -> list[subprocess.Popen[bytes]]:
    """With `--py-spy`, sample each service over the submissions (collapsed stacks)."""
    if not args.py_spy:
        return []
    out_dir = Path(args.profile_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profilers = []
    for name in SERVICE_NAMES:
        pid = pids.get(name)
        if pid is None:
            continue
        argv = [
            args.py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(args.duration + t0 - time.time())),
            "--rate",
            "50",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out_dir / f"{variant.name}-{name}.txt"),
        ]
        profilers.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return profilers


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    def rounded(v: float) -> float | None:
        return None if math.isinf(v) or math.isnan(v) else round(v, 3)

    return {
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "p99": rounded(percentile(values, 99)),
        "never": sum(1 for v in values if math.isinf(v)),
    }


# ----------------------------------------------------------------------------- report


def _ratio(value: float | None, baseline: float | None, *, lower_is_better: bool) -> str:
    if value is None or baseline is None or value == 0 or baseline == 0:
        return "-"
    return f"{(baseline / value if lower_is_better else value / baseline):.1f}x"


def print_processors(one: dict[str, Any], several: dict[str, Any], count: int) -> None:
    """The batched run with one processor against `count` processors (`--processors`)."""

    def processors_cpu(result: dict[str, Any]) -> float:
        return sum(
            v["cpu_seconds"] or 0.0
            for name, v in result["cpu"].items()
            if name == "processor" or name.startswith("processor-")
        )

    def all_cpu(result: dict[str, Any]) -> float:
        return sum(v["cpu_seconds"] or 0.0 for v in result["cpu"].values())

    rows: list[tuple[str, float | None, float | None]] = [
        (
            "COMPLETED per minute (steady)",
            one["completed_per_minute"],
            several["completed_per_minute"],
        ),
        ("submit -> COMPLETED p50 (s)", one["completed_s"]["p50"], several["completed_s"]["p50"]),
        ("submit -> COMPLETED p95 (s)", one["completed_s"]["p95"], several["completed_s"]["p95"]),
    ]
    for label, measure in (("processors", processors_cpu), ("every process", all_cpu)):
        per_1k = [
            measure(r) / (r["completed"] / 1000) if r["completed"] else None for r in (one, several)
        ]
        rows.append((f"CPU s / 1k COMPLETED: {label}", per_1k[0], per_1k[1]))
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}} | {'1 processor':>12} | {f'{count} processors':>13} | ratio")
    for label, a, b in rows:
        ratio = f"{b / a:.3f}" if a and b is not None else "-"
        fa = "-" if a is None else f"{a:,.2f}"
        fb = "-" if b is None else f"{b:,.2f}"
        print(f"{label:<{width}} | {fa:>12} | {fb:>13} | {ratio}")
    eo = several["exactly_once"]
    print(
        f"[{several['variant']}] exactly once: ok={eo['ok']} paid_once={eo['paid_exactly_once']} "
        f"double={eo['double_payments']} not_terminal_at_stop={eo['not_terminal_at_stop']}; "
        f"restarts={several['restarts']}"
    )


def print_table(batched: dict[str, Any], baseline: dict[str, Any]) -> None:
    def fmt(v: Any, unit: str = "") -> str:
        if v is None:
            return "never" if unit == "s" else "-"
        if isinstance(v, float):
            return f"{v:,.1f}{unit}" if unit != "s" else f"{v:.2f}s"
        return f"{v:,}{unit}"

    rows: list[tuple[str, Any, Any, bool]] = [
        (
            "COMPLETED per minute (steady)",
            batched["completed_per_minute"],
            baseline["completed_per_minute"],
            False,
        ),
        ("completed / accepted", batched["completed"], baseline["completed"], False),
    ]
    for key, label in (
        ("first_inclusion_s", "submit -> first inclusion"),
        ("completed_s", "submit -> COMPLETED"),
    ):
        for pct in ("p50", "p95", "p99"):
            rows.append((f"{label} {pct}", batched[key][pct], baseline[key][pct], True))
    rows.append(
        (
            "API answer p95 (from schedule)",
            batched["api_answer_s"]["p95"],
            baseline["api_answer_s"]["p95"],
            True,
        )
    )
    rows.append(
        ("gas per withdrawal", batched["gas_per_withdrawal"], baseline["gas_per_withdrawal"], True)
    )
    for name in (*SERVICE_NAMES, "anvil", "redis", "mariadbd", "generator"):
        rows.append(
            (
                f"CPU s / 1k COMPLETED: {name}",
                batched["cpu"][name]["per_1k_completed"],
                baseline["cpu"][name]["per_1k_completed"],
                True,
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}} | {'batched':>12} | {'baseline':>12} | {'ratio':>7}")
    print("-" * (width + 42))
    for label, value, base, lower in rows:
        unit = "s" if label.startswith("submit") or label.startswith("API") else ""
        print(
            f"{label:<{width}} | {fmt(value, unit):>12} | {fmt(base, unit):>12} | "
            f"{_ratio(value, base, lower_is_better=lower):>7}"
        )
    for result in (batched, baseline):
        eo = result["exactly_once"]
        lag = result["generator_lag_s"]
        print(
            f"[{result['variant']}] exactly once: ok={eo['ok']} "
            f"paid_once={eo['paid_exactly_once']} double={eo['double_payments']} "
            f"wrong={eo['wrong_amounts']} skips={eo['contract_skips']} "
            f"not_terminal_at_stop={eo['not_terminal_at_stop']}; payouts={result['payouts']} "
            f"items/payout mean={result['payout_items_mean']} max={result['payout_items_max']}; "
            f"generator lag p99={lag['p99']}s max={lag['max']}s; "
            f"refused={result['refused']}; restarts={result['restarts']}"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=220.0, help="withdrawals per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of submissions")
    parser.add_argument("--baseline-rate", type=float, default=None, help="default: --rate")
    parser.add_argument("--baseline-duration", type=float, default=None, help="default: --duration")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="s excluded from the steady window (default min(60, duration/5))",
    )
    parser.add_argument(
        "--drain", type=float, default=180.0, help="s to wait for the batched run to finish"
    )
    parser.add_argument(
        "--baseline-drain",
        type=float,
        default=10.0,
        help="s the baseline gets after its last submission",
    )
    parser.add_argument(
        "--batch-max-items",
        type=int,
        default=None,
        help="PROCESSOR_BATCH_MAX_ITEMS of the batched run (default: the processor's)",
    )
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--progress-seconds", type=float, default=10.0)
    parser.add_argument(
        "--only",
        default=None,
        help="run only these variants, comma-separated: batched, baseline, batched-<N>p",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="added to every service's environment in every variant (repeatable), "
        "e.g. PROCESSOR_NICE=0",
    )
    parser.add_argument(
        "--processors",
        type=int,
        default=1,
        help="N > 1 adds the variant batched-<N>p: the batched run with N processor processes",
    )
    parser.add_argument("--py-spy", default="", help="py-spy binary: profile each service")
    parser.add_argument("--profile-dir", default=str(RESULTS / "profiles"))
    parser.add_argument("--smoke", action="store_true", help="a few seconds at a low rate")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.duration, args.drain, args.baseline_drain = 5.0, 4.0, 90.0, 60.0
        args.generators, args.progress_seconds = 1, 5.0
    from svc_processor.settings import ProcessorSettings

    defaults = ProcessorSettings()
    batched_items = args.batch_max_items or defaults.batch_max_items
    extra_env = dict(item.split("=", 1) for item in args.env if "=" in item)
    if len(extra_env) != len(args.env):
        parser.error("--env takes NAME=VALUE")
    variants = [
        Variant("batched", batched_items, args.drain, must_drain=True, env=extra_env),
        Variant("baseline", 1, args.baseline_drain, must_drain=False, env=extra_env),
    ]
    if args.processors > 1:
        variants.insert(
            1,
            Variant(
                f"batched-{args.processors}p",
                batched_items,
                args.drain,
                must_drain=True,
                env=extra_env,
                replicas={"processor": args.processors},
            ),
        )
    only = set(args.only.split(",")) if args.only else {v.name for v in variants}
    unknown = only - {v.name for v in variants}
    if unknown:
        parser.error(f"--only: no variant {', '.join(sorted(unknown))}")
    config = {
        "benchmark": "e2e",
        "payout_size_max": batched_items,
        "baseline_payout_size": 1,
        "batch_max_wait_seconds": defaults.batch_max_wait_seconds,
        "batch_gas_budget": defaults.batch_gas_budget,
        "max_in_flight_per_wallet": defaults.max_in_flight_per_wallet,
        "hot_wallets": 2,
        "confirmations": CONFIRMATIONS,
        "block_time_s": 2,
        "block_gas_limit": 60_000_000,
        "audit_trail": "every state change, hash-chained",
        "policy_checks": "processor validation + signer policy on every item",
        "database": "MariaDB (a database of its own on 127.0.0.1:3306)",
        "processes": "gateway, processor, signer (keystore), monitor, webhooks: one process each"
        + (
            f" (batched-{args.processors}p: {args.processors} processors)"
            if args.processors > 1
            else ""
        ),
        "recipients": "fresh (never funded), one per withdrawal",
        "amount": f"{AMOUNT} USDC",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "baseline_rate_per_s": args.baseline_rate or args.rate,
        "baseline_duration_s": args.baseline_duration or args.duration,
        "generator_processes": args.generators,
        "service_env": extra_env,
        "log_level": args.log_level,
        "cpus": os.cpu_count(),
        "load_at_start": uptime_load(),
        "versions": versions(),
        "smoke": args.smoke,
    }
    print("configuration:", json.dumps(config), flush=True)
    results: dict[str, Any] = {}
    for variant in variants:
        if variant.name not in only:
            continue
        variant_args = argparse.Namespace(**vars(args))
        if variant.name == "baseline":
            variant_args.rate = args.baseline_rate or args.rate
            variant_args.duration = args.baseline_duration or args.duration
        results[variant.name] = run_variant(variant_args, variant)
    if "batched" in results and "baseline" in results:
        print_table(results["batched"], results["baseline"])
    several = results.get(f"batched-{args.processors}p")
    if several is not None and "batched" in results:
        print_processors(results["batched"], several, args.processors)
    verdicts: dict[str, Any] = {}
    batched = results.get("batched")
    baseline = results.get("baseline")
    if batched is not None:
        verdicts = {
            "completed_per_minute": batched["completed_per_minute"]
            >= TARGETS["completed_per_minute"],
            "ratio_to_baseline": baseline is not None
            and baseline["completed_per_minute"] > 0
            and batched["completed_per_minute"] / baseline["completed_per_minute"]
            >= TARGETS["ratio_to_baseline"],
            "first_inclusion_p95": (batched["first_inclusion_s"]["p95"] or math.inf)
            <= TARGETS["first_inclusion_p95_s"],
            "completed_p95": (batched["completed_s"]["p95"] or math.inf)
            <= TARGETS["completed_p95_s"],
            "exactly_once": batched["exactly_once"]["ok"],
        }
        print("targets:", json.dumps({"targets": TARGETS, "met": verdicts}), flush=True)
    out = args.out or RESULTS / f"e2e{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": config, "results": results, "targets": verdicts, "time": time.time()}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
