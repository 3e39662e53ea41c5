"""`bench.api_load` at two commits, interleaved, so that machine drift falls on both alike.

    python -m bench.api_compare --baseline 8e39e53               # 3 rounds, gRPC 600/s
    python -m bench.api_compare --baseline 8e39e53 --rounds 5 --rate 500 --transport rest
    python -m bench.api_compare --baseline HEAD~1 --modes pipeline --current-arg=--daily-limit \
        --current-arg=none

Single runs of the API benchmark on a shared 2-core machine vary by a factor of two or more
from one run to the next, so a figure from another day cannot tell what a change cost. This
checks the baseline commit out into a git worktree of its own (`var/compare/<commit>`, with
its own `make deps`), then runs, round after round, the baseline and the working tree, each
`--gateway-only` and with the pipeline, at one rate and transport; it prints each run and the
medians per side and mode (p95, p50, the gateway's CPU per 1,000 requests and the sum over
every process) and writes them as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODES = ("gateway-only", "pipeline")


@dataclass(frozen=True)
class Run:
    side: str
    mode: str
    round: int
    row: dict[str, Any]


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def baseline_checkout(commit: str) -> Path:
    """A worktree at `commit` with its own virtualenv (created once, reused)."""
    full = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    where = ROOT / "var" / "compare" / full[:12]
    if not where.exists():
        where.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(where), full)
    subprocess.run(["make", "deps"], cwd=where, check=True, stdout=subprocess.DEVNULL)
    return where


def run_once(
    checkout: Path, mode: str, rate: int, seconds: float, transport: str, extra: list[str]
) -> dict[str, Any]:
    out = RESULTS / f"api_compare_part_{checkout.name}_{mode}.json"
    argv = [
        str(checkout / ".venv" / "bin" / "python"),
        "-m",
        "bench.api_load",
        "--rates",
        str(rate),
        "--seconds",
        str(seconds),
        "--transports",
        transport,
        "--out",
        str(out),
    ]
    if mode == "gateway-only":
        argv.append("--gateway-only")
    argv.extend(extra)
    subprocess.run(argv, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
    document = json.loads(out.read_text())
    row: dict[str, Any] = document["rows"][0]
    # The machine's speed at the run's start (`bench.machine_speed`); None from older commits.
    row["python_loop_ms"] = document["config"]["machine"].get("python_loop_ms_at_start")
    out.unlink()
    return row


def medians(runs: list[Run]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for side in ("baseline", "current"):
        for mode in MODES:
            rows = [r.row for r in runs if r.side == side and r.mode == mode]
            if not rows:
                continue
            summary[f"{side} {mode}"] = {
                "p95_ms": statistics.median(r["p95_ms"] for r in rows),
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "gateway_cpu_ms": statistics.median(r["cpu_per_1k"]["gateway"] for r in rows),
                "all_cpu_ms": statistics.median(
                    sum(
                        v
                        for k, v in r["cpu_per_1k"].items()
                        # None: not measured; the harness (the benchmark's own process)
                        # is not reported by older commits' bench.api_load
                        if k not in ("gateway-loop", "harness") and v is not None
                    )
                    for r in rows
                ),
            }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transport", default="grpc", choices=("grpc", "rest"))
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES)
    )
    parser.add_argument(
        "--current-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra bench.api_load argument for the working tree only (repeatable), "
        "e.g. --current-arg=--daily-limit --current-arg=none",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")

    checkouts = {"baseline": baseline_checkout(args.baseline), "current": ROOT}
    runs: list[Run] = []
    for number in range(1, args.rounds + 1):
        for side, checkout in checkouts.items():
            for mode in modes:
                extra = args.current_arg if side == "current" else []
                row = run_once(checkout, mode, args.rate, args.seconds, args.transport, extra)
                runs.append(Run(side, mode, number, row))
                print(
                    f"round {number} {side:8} {mode:12} p50 {row['p50_ms']:7.1f} ms  "
                    f"p95 {row['p95_ms']:7.1f} ms  gateway CPU {row['cpu_per_1k']['gateway']:.3f}"
                    f" ms/request  errors {row['errors']}  machine {row['python_loop_ms']} ms",
                    flush=True,
                )
    summary = medians(runs)
    print(f"medians over {args.rounds} rounds, {args.transport} at {args.rate}/s:")
    for name, figures in summary.items():
        print(
            f"  {name:24} p95 {figures['p95_ms']:7.1f} ms  p50 {figures['p50_ms']:6.1f} ms  "
            f"gateway CPU {figures['gateway_cpu_ms']:.3f}  "
            f"all processes {figures['all_cpu_ms']:.3f} ms/request"
        )
    current = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    out = args.out or RESULTS / f"api_compare_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "api_compare",
                "baseline": args.baseline,
                "current": current + ("+dirty" if dirty else ""),
                "rate": args.rate,
                "seconds": args.seconds,
                "transport": args.transport,
                "modes": modes,
                "current_args": args.current_arg,
                "runs": [r.__dict__ for r in runs],
                "medians": summary,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
