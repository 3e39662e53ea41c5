"""What registered methods cost a grpc.aio server per call (`withdrawal_shared.grpc_registrar`).

    python -m bench.grpc_registered                       # 63 methods, 600 calls/s, 3 rounds
    python -m bench.grpc_registered --methods 1 --rounds 2

An echo server with `--methods` unary methods in one service (the gateway serves 63) is
started as a process of its own, once with the methods registered as the generated
`add_*Servicer_to_server` functions do (`add_registered_method_handlers` beside the generic
handler) and once through `GenericOnlyRegistrar` (the generic handler alone), alternating,
`--rounds` times. Each run sends `--rate` calls/s of 100 bytes for `--seconds` (open loop,
`bench.lean_grpc` on four connections) to one of the methods and reads the server's CPU
(/proc/<pid>/stat) before and after. It prints each run, the medians and their ratio, and
writes the JSON to bench/results/grpc_registered.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.api_load import cpu_seconds
from bench.lean_grpc import UnaryClient, frame_message
from withdrawal_shared.grpc_registrar import GenericOnlyRegistrar

RESULTS = Path(__file__).resolve().parent / "results"
SERVICE = "bench.Echo"
METHOD = "M0"
MODES = ("registered", "generic")


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _serve(mode: str, methods: int) -> None:
    server = grpc.aio.server()
    handlers = {f"M{i}": grpc.unary_unary_rpc_method_handler(_echo) for i in range(methods)}
    registrar: Any = server if mode == "registered" else GenericOnlyRegistrar(server)
    # What a generated add_*Servicer_to_server does with its registrar.
    registrar.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    registrar.add_registered_method_handlers(SERVICE, handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def _cpu_seconds(pid: int) -> float:
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"the echo server (pid {pid}) is gone")
    return seconds


async def _load(port: int, rate: float, seconds: float, pid: int) -> dict[str, float]:
    client = UnaryClient("127.0.0.1", port, f"/{SERVICE}/{METHOD}", [])
    await client.connect(4)
    body = frame_message(b"x" * 100)
    for _ in range(100):  # warm-up
        await client.call(body, 10)
    calls = max(1, round(rate * seconds))
    before = _cpu_seconds(pid)
    start = time.monotonic()
    pending = []
    for i in range(calls):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(client.call(body, 10)))
    replies = await asyncio.gather(*pending, return_exceptions=True)
    cpu = _cpu_seconds(pid) - before
    await client.close()
    failed = sum(1 for reply in replies if not isinstance(reply, bytes) or reply != body[5:])
    return {
        "calls": calls,
        "failed": failed,
        "server_cpu_ms_per_call": round(1000 * cpu / calls, 4),
    }


def run_once(mode: str, methods: int, rate: float, seconds: float) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_registered", "--serve", mode, "--methods", str(methods)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        measured = asyncio.run(_load(port, rate, seconds, server.pid))
    finally:
        server.kill()
        server.wait(10)
    return {"mode": mode, "methods": methods, **measured}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--methods", type=int, default=63, help="unary methods served")
    parser.add_argument("--rate", type=float, default=600.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--smoke", action="store_true", help="100 calls/s, 1 s, 1 round")
    parser.add_argument("--out", type=Path, default=RESULTS / "grpc_registered.json")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.seconds, args.rounds = 100.0, 1.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.methods))
        return 0
    runs = []
    for round_number in range(1, args.rounds + 1):
        for mode in MODES:
            run = {"round": round_number, **run_once(mode, args.methods, args.rate, args.seconds)}
            runs.append(run)
            print(
                f"round {round_number} {mode:10s} {args.methods} methods: "
                f"server CPU {run['server_cpu_ms_per_call']:.3f} ms per call, "
                f"{run['failed']} of {run['calls']} failed",
                flush=True,
            )
    medians = {
        mode: statistics.median(r["server_cpu_ms_per_call"] for r in runs if r["mode"] == mode)
        for mode in MODES
    }
    ratio = medians["generic"] / medians["registered"] if medians["registered"] else None
    print(
        f"median server CPU per call: registered {medians['registered']:.3f} ms, "
        f"generic only {medians['generic']:.3f} ms"
        + (f" ({ratio:.2f}x)" if ratio is not None else "")
    )
    result = {
        "config": {
            "methods": args.methods,
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "grpcio": grpc.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "runs": runs,
        "median_server_cpu_ms_per_call": medians,
        "generic_over_registered": round(ratio, 3) if ratio is not None else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
