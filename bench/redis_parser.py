"""What redis-py's reply parser costs the services: its pure-Python RESP3 parser against
hiredis (the C parser the services use, installed with `redis[hiredis]`).

    python -m bench.redis_parser                # 3 rounds, alternating
    python -m bench.redis_parser --rounds 1 --calls 200

On a redis-server of its own, with the services' client (`redis.asyncio`, RESP3), each round
times the process's CPU per call for each parser, alternating: a one-key script call (the
gateway's rate-limit charge and enqueue are script calls with short replies) and a read of
200 stream entries of three fields (what the processor and the webhook sender read from their
streams). It prints each round and the medians, and writes bench/results/redis_parser.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser

from bench.machine_speed import python_loop_ms
from devstack.redis_server import start_redis_server

RESULTS = Path(__file__).resolve().parent / "results"
PARSERS: dict[str, Any] = {"python": _AsyncRESP3Parser, "hiredis": _AsyncHiredisParser}
STREAM_ENTRIES = 200
SCRIPT = "return redis.call('INCR', KEYS[1])"


async def _per_call_us(call: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(max(10, calls // 20)):  # warm-up
        await call()
    start = time.process_time()
    for _ in range(calls):
        await call()
    return round(1e6 * (time.process_time() - start) / calls, 1)


async def measure(url: str, parser: str, calls: int) -> dict[str, float]:
    pool = aioredis.ConnectionPool.from_url(url, protocol=3, parser_class=PARSERS[parser])
    client = aioredis.Redis(connection_pool=pool)
    try:
        sha = await client.script_load(SCRIPT)
        stream = "bench:stream"
        if await client.xlen(stream) == 0:
            for i in range(STREAM_ENTRIES):
                await client.xadd(stream, {"id": f"{i:026d}", "trace": "0" * 32, "n": str(i)})
        return {
            "script_call_us": await _per_call_us(lambda: client.evalsha(sha, 1, "k"), calls),
            "stream_read_200_us": await _per_call_us(
                lambda: client.xrange(stream, count=STREAM_ENTRIES), max(1, calls // 10)
            ),
        }
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000, help="script calls per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS / "redis_parser.json")
    args = parser.parse_args(argv)
    machine_ms = python_loop_ms()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis_server(Path(tmp) / "redis.log")
        try:
            for number in range(1, args.rounds + 1):
                for name in PARSERS:
                    figures = asyncio.run(measure(server.url, name, args.calls))
                    runs.append({"round": number, "parser": name, **figures})
                    print(
                        f"round {number} {name:8} script call {figures['script_call_us']:7.1f} "
                        f"us CPU, read of {STREAM_ENTRIES} stream entries "
                        f"{figures['stream_read_200_us']:8.1f} us CPU",
                        flush=True,
                    )
        finally:
            server.stop()
    medians = {
        name: {
            key: statistics.median(r[key] for r in runs if r["parser"] == name)
            for key in ("script_call_us", "stream_read_200_us")
        }
        for name in PARSERS
    }
    for name, figures in medians.items():
        print(
            f"median {name:8} script call {figures['script_call_us']:7.1f} us, "
            f"stream read {figures['stream_read_200_us']:8.1f} us"
        )
    ratio = medians["python"]["stream_read_200_us"] / medians["hiredis"]["stream_read_200_us"]
    print(f"stream read: the Python parser costs {ratio:.1f}x hiredis")
    document = {
        "config": {
            "rounds": args.rounds,
            "calls": args.calls,
            "stream_entries": STREAM_ENTRIES,
            "redis_py": redis.__version__,
            "python": platform.python_version(),
            "python_loop_ms": machine_ms,
        },
        "runs": runs,
        "medians": medians,
        "stream_read_python_over_hiredis": round(ratio, 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
