"""CSV batches: how fast and how lean the gateway accepts a large file, and how much the
pipeline pays per minute when batches keep arriving beside single creates.

    python -m bench.batch                     # both parts at full size (make bench-batch)
    python -m bench.batch --only ingest --rows 100000 --big-rows 1000000
    python -m bench.batch --only sustained --seconds 300 --single-rate 100
    python -m bench.batch --smoke             # a few hundred rows, seconds (run by the tests)

**Ingest** (a `HarnessStack` of its own: MariaDB database, own redis-server, anvil, the four
services as processes). The processor and the monitor are paused (SIGSTOP) for the part, so
the gateway ingests on an otherwise idle stack. A file of `--rows` valid rows (fresh
recipients, a client reference each) is uploaded (`POST /v1/batches`, `text/csv`, streamed
from disk; `--transport grpc`: BatchService.CreateBatch as a client stream). Measured: seconds
from the first byte sent to the answer, rows accepted per second, and the gateway's resident
memory: VmRSS before, the highest VmRSS sampled every 20 ms while ingesting, VmHWM (the
kernel's peak) after. Then the answer is checked: every row stored (withdrawals with its
batch_id in the database) and enqueued (the chunk tasks of the standard stream cover every
line). Then the gateway is restarted with GATEWAY_BATCH_MAX_ROWS and GATEWAY_BATCH_MAX_BYTES
raised for `--big-rows`, and the same is measured for that file: a gateway that streams the
file grows by about as much for both; one that buffers it grows ten times as much.

**Sustained** (another `HarnessStack`: anvil with 2-second blocks and a 60M block gas limit,
confirmation depth 5, the processor and monitor at their nice 10). From t0, batches of
`--batch-rows` rows are uploaded back to back for `--seconds` (the next once the previous is
answered), while `bench.load`'s open-loop generators send single CreateWithdrawal calls at
`--single-rate`. So that the run measures a saturated pipeline rather than a queue growing
without end (and can drain afterwards), no batch is uploaded while more than `--max-open`
withdrawals are open (not terminal). After the last upload the run waits up to `--drain`
seconds for every withdrawal to be terminal. Measured: batch rows accepted per second,
COMPLETED per minute in the steady window `[t0 + warmup, t0 + seconds]` (batch rows and
single creates, and each apart), submit -> COMPLETED p50/p95/p99 (a batch row from its
upload's first byte, a single create from its scheduled time; never completed counts as
infinitely late), gas per withdrawal from the receipts the monitor stored, CPU seconds per
1,000 COMPLETED of every process (/proc, as `bench.api_load.CpuMeter` reads it), and the
exactly-once verdict from the chain's Transfer logs (`devstack.exactly_once`).

Prints its configuration and the figures beside their targets; writes JSON to
bench/results/batch.json (batch-smoke.json for `--smoke`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.api_load import CpuMeter
from bench.batch_upload import (
    FIRST_LINE,
    RssSampler,
    Upload,
    batch_key,
    csv_bytes,
    mib,
    paused,
    queued_rows,
    recipient_of,
    status_kib,
    stored_rows,
    upload,
    write_csv,
)
from bench.e2e import SERVICE_NAMES, _pcts, process_pids
from bench.load import (
    AMOUNT,
    LoadPlan,
    OpenLoopLoad,
    Submission,
    epoch,
    exactly_once,
    sayer,
    uptime_load,
    versions,
)
from bench.processes import mariadb_pid

RESULTS = Path(__file__).resolve().parent / "results"
CONFIRMATIONS = 5
CHUNK_ROWS = 500  # svc_gateway.batches.storage.TASK_ROWS: stored rows per queue task
TARGETS = {
    "ingest_seconds_max": 5.0,
    "ingest_peak_rss_mb_max": 300.0,
    "completed_per_minute": 45_000,
    "completed_per_minute_stretch": 60_000,
}


# ----------------------------------------------------------------------------- ingest


def ingest_file(
    stack: Any, args: argparse.Namespace, key: str, path: Path, rows: int, tag: str
) -> dict[str, Any]:
    """Upload one file to the running gateway and measure it (see the module docstring)."""
    pid = stack.pid("gateway")
    assert pid is not None, "the gateway is not running"
    before = status_kib(pid, "VmRSS")
    meter = CpuMeter(pid, {"mariadbd": mariadb_pid(stack.database_url)})
    meter.start()
    sampler = RssSampler(pid).start()
    answer = upload(args.transport, stack, key, f"ingest-{tag}-{secrets.token_hex(4)}", path)
    peak_sampled = sampler.stop()
    cpu = meter.stop()
    hwm = status_kib(pid, "VmHWM")
    stored = stored_rows(stack, answer.batch_id) if answer.batch_id else 0
    tasks, lines = queued_rows(stack, {answer.batch_id}).get(answer.batch_id, (0, 0))
    expected_tasks = math.ceil(rows / CHUNK_ROWS)
    peak = max(v for v in (hwm, peak_sampled, before) if v is not None)
    return {
        "rows": rows,
        "bytes": path.stat().st_size,
        "transport": args.transport,
        "status": answer.status,
        "error": answer.error,
        "batch_id": answer.batch_id,
        "seconds": round(answer.seconds, 3),
        "rows_per_second": round(answer.accepted_count / answer.seconds, 1)
        if answer.seconds > 0
        else None,
        "accepted_count": answer.accepted_count,
        "stored_rows": stored,
        "queue_tasks": tasks,
        "queue_tasks_expected": expected_tasks,
        "queue_lines": lines,
        "all_stored_and_enqueued": answer.accepted_count == stored == lines == rows,
        "gateway_pid": pid,
        "gateway_rss_before_mb": mib(before),
        "gateway_rss_peak_sampled_mb": mib(peak_sampled),
        "gateway_vm_hwm_mb": mib(hwm),
        "gateway_peak_mb": mib(peak),
        "gateway_growth_mb": mib(peak - before) if before is not None else None,
        "gateway_cpu_seconds": None if cpu["gateway"] is None else round(cpu["gateway"], 2),
        # The machine's one MariaDB server: whatever else uses it meanwhile is counted too.
        "mariadbd_cpu_seconds": None if cpu["mariadbd"] is None else round(cpu["mariadbd"], 2),
    }


def run_ingest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from devstack.harness import HarnessConfig, HarnessStack
    from svc_gateway.settings import GatewaySettings

    say = sayer("ingest")
    run_id = secrets.token_hex(4)
    small = work / "ingest-small.csv"
    big = work / "ingest-big.csv"
    references = not args.no_client_references
    say(f"writing {args.rows:,} and {args.big_rows:,} rows ...")
    checksummed = args.checksummed
    small_bytes = write_csv(
        small, run_id, "small", args.rows, references=references, checksummed=checksummed
    )
    big_bytes = write_csv(
        big, run_id, "big", args.big_rows, references=references, checksummed=checksummed
    )
    defaults = GatewaySettings()
    raised = {
        "GATEWAY_BATCH_MAX_ROWS": str(max(args.big_rows, defaults.batch_max_rows)),
        "GATEWAY_BATCH_MAX_BYTES": str(max(2 * big_bytes, defaults.batch_max_bytes)),
    }
    var_dir = Path(tempfile.mkdtemp(prefix="bench-batch-ingest-"))
    config = HarnessConfig(
        var_dir=var_dir,
        confirmations=CONFIRMATIONS,
        env={"LOG_LEVEL": args.log_level},
        service_users=True,
    )
    say(f"starting the stack (logs in {var_dir / 'logs'}) ...")
    with HarnessStack(config) as stack:
        key = batch_key(stack)
        # The pipeline stays still: the gateway alone works on the upload.
        with paused(stack, ("processor", "monitor")):
            say(f"{args.rows:,} rows ({small_bytes:,} bytes), default limits; load {uptime_load()}")
            first = ingest_file(stack, args, key, small, args.rows, "small")
            first["gateway_limits"] = {
                "GATEWAY_BATCH_MAX_ROWS": defaults.batch_max_rows,
                "GATEWAY_BATCH_MAX_BYTES": defaults.batch_max_bytes,
            }
            say(_ingest_line(first))
            files = {"rows": first}
            if args.big_rows > 0:  # `--big-rows 0`: the first file only
                say(f"restarting the gateway with {raised} ...")
                stack.respawn("gateway", raised)
                say(f"{args.big_rows:,} rows ({big_bytes:,} bytes); load {uptime_load()}")
                second = ingest_file(stack, args, key, big, args.big_rows, "big")
                second["gateway_limits"] = {name: int(value) for name, value in raised.items()}
                say(_ingest_line(second))
                files["big_rows"] = second
    small.unlink(missing_ok=True)
    big.unlink(missing_ok=True)
    growth = (
        (first["gateway_growth_mb"], files["big_rows"]["gateway_growth_mb"])
        if ("big_rows" in files)
        else (None, None)
    )
    return {
        "client_references": references,
        "files": files,
        "growth_ratio_big_to_rows": round(growth[1] / growth[0], 2)
        if growth[0] and growth[1] is not None
        else None,
        "rows_ratio": round(args.big_rows / args.rows, 1),
    }


def _ingest_line(result: dict[str, Any]) -> str:
    return (
        f"{result['rows']:,} rows: status {result['status']} in {result['seconds']:.2f} s "
        f"({result['rows_per_second']} rows/s); stored {result['stored_rows']:,}, queued "
        f"{result['queue_lines']:,} lines in {result['queue_tasks']} tasks; gateway RSS "
        f"{result['gateway_rss_before_mb']} -> peak {result['gateway_peak_mb']} MB "
        f"(+{result['gateway_growth_mb']}); CPU s gateway {result['gateway_cpu_seconds']}, "
        f"mariadbd {result['mariadbd_cpu_seconds']}; {result['error']}"
    ).rstrip("; ")


# ----------------------------------------------------------------------------- sustained


@dataclass
class Backlog:
    """Open (non-terminal) withdrawals: the last count read plus the rows accepted since."""

    open_at_poll: int = 0
    accepted_since: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def estimate(self) -> int:
        with self.lock:
            return self.open_at_poll + self.accepted_since

    def polled(self, open_now: int) -> None:
        with self.lock:
            self.open_at_poll, self.accepted_since = open_now, 0

    def accepted(self, rows: int) -> None:
        with self.lock:
            self.accepted_since += rows


def _submit_batches(
    stack: Any,
    args: argparse.Namespace,
    key: str,
    run_id: str,
    t0: float,
    backlog: Backlog,
    uploads: list[Upload],
) -> None:
    """Batches back to back from t0 until t0 + seconds, none while the backlog is full."""
    end = t0 + args.seconds
    index = 0
    body = csv_bytes(run_id, f"b{index}", args.batch_rows)
    while time.time() < t0:
        time.sleep(0.01)
    while time.time() < end:
        if backlog.estimate() >= args.max_open:
            time.sleep(0.1)
            continue
        answer = upload(args.transport, stack, key, f"{run_id}-b{index}", body)
        uploads.append(answer)
        backlog.accepted(answer.accepted_count)
        index += 1
        body = csv_bytes(run_id, f"b{index}", args.batch_rows)


def _open_count(stack: Any) -> tuple[int, int, int]:
    """(stored, open, COMPLETED) withdrawals now."""
    from withdrawal_shared.db.models import Withdrawal
    from withdrawal_shared.states import TERMINAL, State

    with stack.sessions()() as session:
        by_state = {
            State(state): int(n)
            for state, n in session.execute(
                select(Withdrawal.state, func.count()).group_by(Withdrawal.state)
            ).all()
        }
    stored = sum(by_state.values())
    terminal = sum(n for state, n in by_state.items() if state in TERMINAL)
    return stored, stored - terminal, by_state.get(State.COMPLETED, 0)


def run_sustained(args: argparse.Namespace) -> dict[str, Any]:
    from devstack.harness import HarnessConfig, HarnessStack

    say = sayer("sustained")
    var_dir = Path(tempfile.mkdtemp(prefix="bench-batch-sustained-"))
    config = HarnessConfig(
        var_dir=var_dir,
        confirmations=CONFIRMATIONS,
        env={"LOG_LEVEL": args.log_level},
        service_users=True,
    )
    say(f"starting the stack (logs in {var_dir / 'logs'}) ...")
    started = time.monotonic()
    with HarnessStack(config) as stack:
        say(f"stack up in {time.monotonic() - started:.1f} s; load {uptime_load()}")
        key = batch_key(stack)
        run_id = secrets.token_hex(5)
        pids = process_pids(stack)
        gateway_pid = pids.pop("gateway")
        assert gateway_pid is not None
        meter = CpuMeter(gateway_pid, pids)
        t0 = time.time() + 2.0
        singles = int(args.single_rate * args.seconds)
        load: OpenLoopLoad | None = None
        if singles > 0:
            plan = LoadPlan(
                stack.grpc_target,
                stack.api_key,
                run_id,
                t0,
                args.single_rate,
                singles,
                args.generators,
            )
            load = OpenLoopLoad(plan).start()
        meter.start()
        backlog = Backlog()
        uploads: list[Upload] = []
        submitter = threading.Thread(
            target=_submit_batches,
            args=(stack, args, key, run_id, t0, backlog, uploads),
            name="batch-submitter",
            daemon=True,
        )
        submitter.start()
        try:
            _follow(stack, args, t0, submitter, backlog, uploads, say)
        except BaseException:
            if load is not None:
                load.terminate()
            raise
        submitter.join()
        report = load.join() if load is not None else None
        cpu = meter.stop()
        say("reading the results ...")
        singles_accepted = (
            [s for s in report.submissions if s.withdrawal_id] if report is not None else []
        )
        rows = _batch_rows(stack, run_id, uploads)
        result = _sustained_figures(stack, args, t0, uploads, rows, singles_accepted)
        result["single_refused"] = (
            len(report.submissions) - len(singles_accepted) if report is not None else 0
        )
        result["single_generator_cpu_seconds"] = (
            round(report.cpu_seconds, 2) if report is not None else 0.0
        )
        cpu["generator"] = report.cpu_seconds if report is not None else None
        result["cpu"] = _per_1k(cpu, result["completed"])
        result["restarts"] = {name: stack.restarts(name) for name in SERVICE_NAMES}
        result["wall_seconds"] = round(time.time() - t0, 1)
        say("exactly-once check against the chain's Transfer logs ...")
        result["exactly_once"] = exactly_once(stack, [*rows, *singles_accepted], drained=True)
        say(f"done; load {uptime_load()}")
    return result


def _follow(
    stack: Any,
    args: argparse.Namespace,
    t0: float,
    submitter: threading.Thread,
    backlog: Backlog,
    uploads: list[Upload],
    say: Any,
) -> None:
    """Count the open withdrawals every second (the submitter's bound), print progress, and
    return once the submissions are over and everything is terminal or the drain is over."""
    drain_deadline = t0 + args.seconds + args.drain
    last_print = 0.0
    while True:
        time.sleep(1.0)
        stored, open_now, completed = _open_count(stack)
        backlog.polled(open_now)
        now = time.time()
        if now - last_print >= args.progress_seconds:
            last_print = now
            say(
                f"t={now - t0:6.1f}s batches={len(uploads)} stored={stored} "
                f"open={open_now} completed={completed} load {uptime_load()}"
            )
        if submitter.is_alive() or now < t0 + args.seconds:
            continue
        if open_now == 0 or now >= drain_deadline:
            return


def _per_1k(cpu: dict[str, float | None], completed: int) -> dict[str, dict[str, float | None]]:
    return {
        name: {
            "cpu_seconds": None if seconds is None else round(seconds, 2),
            "per_1k_completed": None
            if seconds is None or not completed
            else round(seconds / (completed / 1000), 3),
        }
        for name, seconds in cpu.items()
    }


def _batch_rows(stack: Any, run_id: str, uploads: list[Upload]) -> list[Submission]:
    """Every stored batch row as a `Submission`: its withdrawal id from the database, its
    recipient from the file (row i sits on line i + 2), its submit time its upload's start."""
    from withdrawal_shared.db.models import Withdrawal

    by_batch = {u.batch_id: (i, u) for i, u in enumerate(uploads) if u.batch_id}
    found: list[Submission] = []
    with stack.sessions()() as session:
        for batch_id, (index, answer) in by_batch.items():
            for withdrawal_id, line in session.execute(
                select(Withdrawal.id, Withdrawal.batch_line).where(Withdrawal.batch_id == batch_id)
            ).all():
                recipient = recipient_of(run_id, f"b{index}", int(line) - FIRST_LINE)
                found.append(
                    Submission(
                        len(found),
                        answer.started,
                        answer.started,
                        answer.answered,
                        withdrawal_id,
                        recipient,
                    )
                )
    return found


def _sustained_figures(
    stack: Any,
    args: argparse.Namespace,
    t0: float,
    uploads: list[Upload],
    rows: list[Submission],
    singles: list[Submission],
) -> dict[str, Any]:
    from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, WithdrawalAudit
    from withdrawal_shared.states import State

    with stack.sessions()() as session:
        completed_at = {
            withdrawal_id: epoch(occur)
            for withdrawal_id, occur in session.execute(
                select(WithdrawalAudit.withdrawal_id, WithdrawalAudit.occur_time).where(
                    WithdrawalAudit.to_state == State.COMPLETED.value
                )
            ).all()
        }
        payouts = session.execute(
            select(PayoutTransaction.id, PayoutTransaction.gas_used, PayoutTransaction.kind)
        ).all()
        paid_items = dict(
            session.execute(
                select(PayoutItem.payout_tx_id, func.count())
                .where(PayoutItem.outcome == "PAID")
                .group_by(PayoutItem.payout_tx_id)
            ).all()
        )
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 5)
    start, end = t0 + warmup, t0 + args.seconds
    minutes = (end - start) / 60

    def per_minute(items: list[Submission]) -> float:
        ids = {s.withdrawal_id for s in items}
        n = sum(1 for i in ids if (t := completed_at.get(i)) is not None and start <= t < end)
        return round(n / minutes, 1) if minutes > 0 else 0.0

    def latencies(items: list[Submission]) -> list[float]:
        return [
            completed_at[s.withdrawal_id] - s.scheduled
            if s.withdrawal_id in completed_at
            else math.inf
            for s in items
        ]

    paying = [p for p in payouts if p.kind in ("vault", "transfer") and p.gas_used]
    sizes = [int(paid_items.get(p.id, 0)) for p in paying]
    accepted_rows = sum(u.accepted_count for u in uploads)
    upload_seconds = [u.seconds for u in uploads if u.batch_id]
    everything = [*rows, *singles]
    return {
        "batches_uploaded": len(uploads),
        "batches_refused": sum(1 for u in uploads if not u.batch_id),
        "refusals": sorted({f"{u.status} {u.error}"[:200] for u in uploads if not u.batch_id}),
        "batch_rows_accepted": accepted_rows,
        "batch_rows_stored": len(rows),
        "batch_rows_per_second": round(accepted_rows / args.seconds, 1),
        "batch_upload_s": _pcts(upload_seconds),
        "batch_rows_per_second_while_uploading": round(accepted_rows / sum(upload_seconds), 1)
        if upload_seconds
        else None,
        "single_accepted": len(singles),
        "completed": sum(1 for s in everything if s.withdrawal_id in completed_at),
        "steady_window_s": [round(warmup, 1), round(args.seconds, 1)],
        "completed_per_minute": per_minute(everything),
        "completed_per_minute_batch_rows": per_minute(rows),
        "completed_per_minute_single": per_minute(singles),
        "submit_to_completed_s": {
            "batch_rows": _pcts(latencies(rows)),
            "single": _pcts(latencies(singles)),
        },
        "payouts": len(paying),
        "payout_items_mean": round(sum(sizes) / len(sizes), 1) if sizes else 0,
        "payout_items_max": max(sizes) if sizes else 0,
        "gas_per_withdrawal": round(sum(int(p.gas_used) for p in paying) / sum(sizes))
        if sum(sizes)
        else None,
    }


# ----------------------------------------------------------------------------- report


def print_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures beside their targets; the verdicts."""
    met: dict[str, Any] = {}
    ingest = results.get("ingest")
    if ingest is not None:
        for label, item in ingest["files"].items():
            print(
                f"ingest {item['rows']:>9,} rows: {item['seconds']:8.2f} s "
                f"(target <= {TARGETS['ingest_seconds_max']:g} s for 100,000), "
                f"{item['rows_per_second']} rows/s, gateway peak RSS {item['gateway_peak_mb']} MB "
                f"(+{item['gateway_growth_mb']} MB; target <= "
                f"{TARGETS['ingest_peak_rss_mb_max']:g} MB), stored and enqueued: "
                f"{item['all_stored_and_enqueued']}"
            )
            met[f"ingest_{label}_stored_and_enqueued"] = item["all_stored_and_enqueued"]
            met[f"ingest_{label}_peak_rss"] = (
                item["gateway_peak_mb"] is not None
                and item["gateway_peak_mb"] <= TARGETS["ingest_peak_rss_mb_max"]
            )
        met["ingest_rows_seconds"] = (
            ingest["files"]["rows"]["seconds"] <= TARGETS["ingest_seconds_max"]
        )
        if "big_rows" in ingest["files"]:
            print(
                f"memory growth, big file / file: {ingest['growth_ratio_big_to_rows']} "
                f"for {ingest['rows_ratio']}x the rows (about 1 when the file is streamed)"
            )
    sustained = results.get("sustained")
    if sustained is not None:
        s = sustained
        latency = s["submit_to_completed_s"]
        print(
            f"sustained: {s['batch_rows_per_second']} batch rows/s accepted "
            f"({s['batches_uploaded']} batches), {s['single_accepted']} single creates; "
            f"COMPLETED/min {s['completed_per_minute']:,} (batch rows "
            f"{s['completed_per_minute_batch_rows']:,}, single "
            f"{s['completed_per_minute_single']:,}); target >= "
            f"{TARGETS['completed_per_minute']:,} (stretch "
            f"{TARGETS['completed_per_minute_stretch']:,})"
        )
        for kind, pcts in latency.items():
            print(
                f"  submit -> COMPLETED, {kind}: p50 {pcts['p50']} s, p95 {pcts['p95']} s, "
                f"p99 {pcts['p99']} s, never {pcts['never']}"
            )
        cpu = ", ".join(
            f"{name} {v['per_1k_completed']}" for name, v in s["cpu"].items() if name != "gateway"
        )
        print(
            f"  gas per withdrawal {s['gas_per_withdrawal']} ({s['payouts']} payouts, "
            f"{s['payout_items_mean']} items mean); CPU s per 1,000 COMPLETED: gateway "
            f"{s['cpu']['gateway']['per_1k_completed']}, {cpu}"
        )
        eo = s["exactly_once"]
        print(
            f"  exactly once: ok={eo['ok']} paid_once={eo['paid_exactly_once']} "
            f"double={eo['double_payments']} lost={eo['lost_withdrawals']} "
            f"not_terminal_at_stop={eo['not_terminal_at_stop']}"
        )
        met["completed_per_minute"] = s["completed_per_minute"] >= TARGETS["completed_per_minute"]
        met["completed_per_minute_stretch"] = (
            s["completed_per_minute"] >= TARGETS["completed_per_minute_stretch"]
        )
        met["exactly_once"] = eo["ok"]
    print("targets:", json.dumps({"targets": TARGETS, "met": met}), flush=True)
    return met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=("ingest", "sustained"), default=None)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the ingest file")
    parser.add_argument(
        "--big-rows",
        type=int,
        default=1_000_000,
        help="rows of the second ingest file (the gateway's limits raised for it)",
    )
    parser.add_argument(
        "--no-client-references",
        action="store_true",
        help="ingest files without the client_reference column",
    )
    parser.add_argument(
        "--checksummed",
        action="store_true",
        help="ingest files whose recipients are in EIP-55 mixed case (each row's checksum "
        "is checked)",
    )
    parser.add_argument("--transport", choices=("rest", "grpc"), default="rest")
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="seconds of sustained submissions"
    )
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per sustained batch")
    parser.add_argument(
        "--single-rate", type=float, default=100.0, help="single creates per second beside"
    )
    parser.add_argument(
        "--max-open",
        type=int,
        default=60_000,
        help="no batch is uploaded while more withdrawals than this are open",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="s excluded from the steady window (default min(60, seconds/5))",
    )
    parser.add_argument(
        "--drain", type=float, default=300.0, help="s to wait for the backlog after the load"
    )
    parser.add_argument("--generators", type=int, default=1, help="single-create processes")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--progress-seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="a few hundred rows, seconds")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.big_rows = 300, 1_200
        args.seconds, args.batch_rows, args.single_rate = 6.0, 200, 5.0
        args.max_open, args.drain, args.warmup = 1_000, 120.0, 1.0
        args.progress_seconds = 5.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {
        "benchmark": "batch",
        "transport": args.transport,
        "ingest_rows": args.rows,
        "ingest_big_rows": args.big_rows,
        "ingest_client_references": not args.no_client_references,
        "ingest_checksummed_recipients": args.checksummed,
        "ingest_pipeline": "processor and monitor paused (SIGSTOP): the gateway alone works",
        "sustained_seconds": args.seconds,
        "sustained_batch_rows": args.batch_rows,
        "sustained_single_rate_per_s": args.single_rate,
        "sustained_max_open": args.max_open,
        "drain_s": args.drain,
        "confirmations": CONFIRMATIONS,
        "block_time_s": 2,
        "block_gas_limit": 60_000_000,
        "hot_wallets": 2,
        "database": "MariaDB (a database of its own on 127.0.0.1:3306)",
        "database_users": "per service",
        "recipients": "fresh (never funded), one per withdrawal",
        "amount": f"{AMOUNT} USDC",
        "chunk_rows_per_task": CHUNK_ROWS,
        "cpus": os.cpu_count(),
        "load_at_start": uptime_load(),
        "versions": versions(),
        "smoke": args.smoke,
    }
    print("configuration:", json.dumps(config), flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as work:
        if args.only in (None, "ingest"):
            results["ingest"] = run_ingest(args, Path(work))
    if args.only in (None, "sustained"):
        results["sustained"] = run_sustained(args)
    met = print_summary(results)
    out = args.out or RESULTS / f"batch{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": config, "results": results, "targets": met, "time": time.time()}
    out.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    print(f"wrote {out}")
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, Upload):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
