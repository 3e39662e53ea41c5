"""Webhook delivery under the end-to-end load: every state change of every withdrawal signed and
POSTed to one endpoint on a local receiver, measured from the state change to the receiver's
2xx.

    python -m bench.webhooks                          # 3 min at 100/s (make bench-webhooks)
    python -m bench.webhooks --rate 50 --duration 30  # shorter
    python -m bench.webhooks --smoke                  # seconds at a low rate (run by make test)

One `HarnessStack` as `make bench-e2e`'s batched variant (own Redis, own MariaDB database,
anvil with 2-second blocks, confirmation depth 5, the services as real processes, the webhook
sender among them), the same open-loop generators (`bench/load.py`) submitting withdrawals
over gRPC. Before the load, the partner registers one endpoint through the WebhookService,
subscribed to every event type, on a receiver that runs as a process of its own on loopback
(aiohttp) and verifies every signature with the `standardwebhooks` library. A withdrawal makes
about seven events (RECEIVED, VALIDATED, QUEUED, SIGNED, BROADCAST, CONFIRMING, COMPLETED),
so 100 withdrawals/s offer about 700 deliveries/s.

Measured:
- every event delivered: the event ids the withdrawal audit trail implies
  (`evt_<withdrawal>_<version>` for every audit row after the endpoint was registered) against
  those the receiver accepted; duplicates and, after de-duplication by id, events of one
  withdrawal out of sequence order;
- lag: the receiver's clock when it answers 2xx minus the event's `timestamp` (the audit row's
  time, written in the transaction of the state change), for the first delivery of each
  event; over all events and over the steady window [t0 + warmup, t0 + duration];
- events per second delivered in the steady window, against those that occurred in it;
- CPU seconds per 1,000 delivered events of the sender (`svc_webhooks`), the receiver and
  mariadbd (which the pipeline and other users of the machine's MariaDB share), and of the
  other processes for context (utime + stime from /proc between t0 and the end).

Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.e2e import SERVICE_NAMES, _pcts, cpu_seconds, process_pids
from bench.load import GeneratorReport, epoch, run_generators, sayer, uptime_load, versions

RESULTS = Path(__file__).resolve().parent / "results"
CONFIRMATIONS = 5
TARGETS = {"lag_p95_s": 2.0, "missing_events": 0}
SENDER_ENV = {
    # One endpoint takes the whole load: let the sender keep as many attempts in flight to it.
    "WEBHOOKS_MAX_IN_FLIGHT": "64",
    "WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT": "64",
}


# ----------------------------------------------------------------------------- the receiver


class Receiver:
    """POST /hook: verify, record the first arrival of each event id, answer 204.
    PUT /secret sets the secret; GET /summary and GET /dump report (loopback only)."""

    def __init__(self) -> None:
        self.secret = ""
        self.first: dict[str, tuple[float, float, str, int]] = {}
        self.total = 0
        self.bad = 0
        self.out_of_order = 0
        self.last_sequence: dict[str, int] = {}

    async def hook(self, request: Any) -> Any:
        from aiohttp import web
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad += 1
            return web.Response(status=400)
        self.total += 1
        event_id = request.headers["webhook-id"]
        if event_id not in self.first:
            data = payload.get("data", {})
            withdrawal = str(data.get("withdrawal", ""))
            sequence = int(data.get("sequence", 0))
            if sequence <= self.last_sequence.get(withdrawal, 0):
                self.out_of_order += 1
            self.last_sequence[withdrawal] = max(sequence, self.last_sequence.get(withdrawal, 0))
            occurred = (
                dt.datetime.fromisoformat(payload["timestamp"].rstrip("Z"))
                .replace(tzinfo=dt.UTC)
                .timestamp()
            )
            self.first[event_id] = (time.time(), occurred, withdrawal, sequence)
        return web.Response(status=204)

    async def set_secret(self, request: Any) -> Any:
        from aiohttp import web

        self.secret = (await request.text()).strip()
        return web.Response(status=204)

    def summary(self) -> dict[str, Any]:
        return {
            "unique": len(self.first),
            "total": self.total,
            "bad_signatures": self.bad,
            "out_of_order": self.out_of_order,
        }

    async def get_summary(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(self.summary())

    async def dump(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(
            {**self.summary(), "events": {k: list(v) for k, v in self.first.items()}}
        )


def receiver_main(port_file: Path) -> int:
    from aiohttp import web

    receiver = Receiver()
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/hook", receiver.hook)
    app.router.add_put("/secret", receiver.set_secret)
    app.router.add_get("/summary", receiver.get_summary)
    app.router.add_get("/dump", receiver.dump)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0


class ReceiverProcess:
    def __init__(self, var_dir: Path) -> None:
        port_file = var_dir / "receiver.port"
        log = (var_dir / "receiver.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.webhooks", "--receiver", str(port_file)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the receiver did not start: see {var_dir / 'receiver.log'}")
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{int(port_file.read_text())}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def set_secret(self, secret: str) -> None:
        self._call("PUT", "/secret", secret.encode())

    def summary(self) -> dict[str, Any]:
        return dict(self._call("GET", "/summary"))

    def dump(self) -> dict[str, Any]:
        return dict(self._call("GET", "/dump"))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# ----------------------------------------------------------------------------- the run


def _register(stack: Any, receiver: ReceiverProcess) -> tuple[str, dt.datetime]:
    """A key with `webhooks:manage` for the stack's partner, and its endpoint on the
    receiver, subscribed to every event type: (its name, when it was registered)."""
    import grpc

    from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
    from devstack.bootstrap import DEV_PARTNER
    from withdrawal_shared.db.api_keys import create_api_key
    from withdrawal_shared.scopes import Scope
    from withdrawal_shared.webhooks.events import EVENT_TYPES

    with stack.sessions().begin() as session:
        key = create_api_key(session, DEV_PARTNER, {Scope.WEBHOOKS_MANAGE}).token
    with grpc.insecure_channel(stack.grpc_target) as channel:
        created = webhooks_pb2_grpc.WebhookServiceStub(channel).CreateWebhookEndpoint(
            webhooks_pb2.CreateWebhookEndpointRequest(
                webhook_endpoint=webhooks_pb2.WebhookEndpoint(
                    url=f"{receiver.base}/hook",
                    event_types=sorted(EVENT_TYPES),
                    description="bench.webhooks receiver",
                )
            ),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=30,
        )
    receiver.set_secret(created.secret)
    return created.name, created.create_time.ToDatetime()


def _expected_events(stack: Any, since: dt.datetime) -> dict[str, float]:
    """Event id -> occur time (epoch) of every audit row of the partner's withdrawals after
    `since`: what the endpoint must receive."""
    from devstack.bootstrap import DEV_PARTNER
    from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit

    with stack.sessions()() as session:
        rows = session.execute(
            select(
                WithdrawalAudit.withdrawal_id, WithdrawalAudit.version, WithdrawalAudit.occur_time
            )
            .join(Withdrawal, Withdrawal.id == WithdrawalAudit.withdrawal_id)
            .where(Withdrawal.partner_id == DEV_PARTNER, WithdrawalAudit.occur_time >= since)
        ).all()
    return {f"evt_{w}_{v}": epoch(occur) for w, v, occur in rows}


def _progress(stack: Any, receiver: ReceiverProcess) -> tuple[dict[str, int], int, int]:
    """(withdrawals by state, deliveries PENDING, events the receiver has)."""
    from withdrawal_shared.db.models import WebhookDelivery, Withdrawal

    with stack.sessions()() as session:
        by_state = {
            str(state): int(n)
            for state, n in session.execute(
                select(Withdrawal.state, func.count()).group_by(Withdrawal.state)
            ).all()
        }
        pending = int(
            session.scalar(select(func.count()).where(WebhookDelivery.state == "PENDING")) or 0
        )
    return by_state, pending, int(receiver.summary()["unique"])


def _attempts(stack: Any) -> dict[str, int]:
    from withdrawal_shared.db.models import WebhookAttempt

    with stack.sessions()() as session:
        return {
            str(outcome): int(n)
            for outcome, n in session.execute(
                select(WebhookAttempt.outcome, func.count()).group_by(WebhookAttempt.outcome)
            ).all()
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devstack.harness import HarnessConfig, HarnessStack
    from withdrawal_shared.states import TERMINAL, State

    var_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    env = {"LOG_LEVEL": args.log_level, **SENDER_ENV}
    config = HarnessConfig(var_dir=var_dir, confirmations=CONFIRMATIONS, env=env)
    count = int(args.rate * args.duration)
    say = sayer("webhooks")
    say(f"starting the stack (logs in {var_dir / 'logs'}) ...")
    with HarnessStack(config) as stack:
        receiver = ReceiverProcess(var_dir)
        try:
            endpoint, registered = _register(stack, receiver)
            say(f"endpoint {endpoint} on {receiver.base}/hook; load {uptime_load()}")
            pids: dict[str, int | None] = {
                **process_pids(stack),
                "webhooks": stack.pid("webhooks"),
                "receiver": receiver.pid,
            }
            t0 = time.time() + 2.0
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            holder: dict[str, GeneratorReport] = {}

            def generate() -> None:
                holder["report"] = run_generators(
                    stack.grpc_target,
                    stack.api_key,
                    os.urandom(6).hex(),
                    t0,
                    args.rate,
                    count,
                    args.generators,
                )

            thread = threading.Thread(target=generate, name="generators", daemon=True)
            thread.start()
            deadline = t0 + args.duration + args.drain
            expected: dict[str, float] = {}
            while True:
                time.sleep(min(args.progress_seconds, max(0.5, deadline - time.time())))
                by_state, pending, delivered = _progress(stack, receiver)
                stored = sum(by_state.values())
                terminal = sum(n for s, n in by_state.items() if State(s) in TERMINAL)
                say(
                    f"t={time.time() - t0:6.1f}s stored={stored} open={stored - terminal} "
                    f"completed={by_state.get(State.COMPLETED.value, 0)} "
                    f"events delivered={delivered} pending deliveries={pending} "
                    f"load {uptime_load()}"
                )
                if thread.is_alive() or terminal < count:
                    if time.time() < deadline:
                        continue
                else:
                    expected = _expected_events(stack, registered)
                    if delivered < len(expected) and time.time() < deadline:
                        continue
                break
            thread.join()
            if not expected:
                expected = _expected_events(stack, registered)
            cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            report = holder["report"]
            dumped = receiver.dump()
            attempts = _attempts(stack)
        finally:
            receiver.stop()
    return _results(args, t0, count, report, expected, dumped, attempts, cpu_before, cpu_after)


def _results(
    args: argparse.Namespace,
    t0: float,
    count: int,
    report: GeneratorReport,
    expected: dict[str, float],
    dumped: dict[str, Any],
    attempts: dict[str, int],
    cpu_before: dict[str, float | None],
    cpu_after: dict[str, float | None],
) -> dict[str, Any]:
    events: dict[str, list[Any]] = dumped["events"]
    missing = sorted(set(expected) - set(events))
    unexpected = sorted(set(events) - set(expected))
    lags = [received - occurred for received, occurred, _, _ in events.values()]
    warmup = args.warmup if args.warmup is not None else min(30.0, args.duration / 5)
    start, end = t0 + warmup, t0 + args.duration
    window = end - start
    steady = [r - o for r, o, _, _ in events.values() if start <= o < end]
    delivered_in_window = sum(1 for r, _, _, _ in events.values() if start <= r < end)
    occurred_in_window = sum(1 for o in expected.values() if start <= o < end)
    delivered = len(events)
    cpu: dict[str, dict[str, float | None]] = {}
    for name, before in cpu_before.items():
        after = cpu_after.get(name)
        used = None if before is None or after is None else after - before
        cpu[name] = {
            "cpu_seconds": None if used is None else round(used, 2),
            "per_1k_events": None
            if used is None or delivered == 0
            else round(used / (delivered / 1000), 3),
        }
    cpu["generator"] = {
        "cpu_seconds": round(report.cpu_seconds, 2),
        "per_1k_events": round(report.cpu_seconds / (delivered / 1000), 3) if delivered else None,
    }
    accepted = sum(1 for s in report.submissions if s.withdrawal_id)
    return {
        "scheduled": count,
        "accepted": accepted,
        "events_expected": len(expected),
        "events_delivered": delivered,
        "events_missing": len(missing),
        "missing_sample": missing[:10],
        "events_unexpected": len(unexpected),
        "deliveries_received": dumped["total"],
        "duplicates": dumped["total"] - delivered,
        "bad_signatures": dumped["bad_signatures"],
        "out_of_order": dumped["out_of_order"],
        "attempts_by_outcome": attempts,
        "events_per_withdrawal": round(len(expected) / accepted, 2) if accepted else None,
        "steady_window_s": [round(warmup, 1), round(args.duration, 1)],
        "events_per_second_delivered": round(delivered_in_window / window, 1) if window else None,
        "events_per_second_occurred": round(occurred_in_window / window, 1) if window else None,
        "lag_s": {**_pcts(lags), "max": round(max(lags), 3) if lags else None},
        "lag_steady_s": {**_pcts(steady), "max": round(max(steady), 3) if steady else None},
        "cpu": cpu,
        "load_at_end": uptime_load(),
        "wall_seconds": round(time.time() - t0, 1),
    }


def print_table(result: dict[str, Any]) -> None:
    lag, steady = result["lag_s"], result["lag_steady_s"]
    rows = [
        (
            "events expected / delivered / missing",
            f"{result['events_expected']:,} / "
            f"{result['events_delivered']:,} / {result['events_missing']}",
        ),
        (
            "duplicates / out of order / bad signatures",
            f"{result['duplicates']} / {result['out_of_order']} / {result['bad_signatures']}",
        ),
        (
            "events/s delivered (occurred), steady",
            f"{result['events_per_second_delivered']} ({result['events_per_second_occurred']})",
        ),
        (
            "lag p50 / p95 / p99 / max, all",
            f"{lag['p50']} / {lag['p95']} / {lag['p99']} / {lag['max']} s",
        ),
        (
            "lag p50 / p95 / p99 / max, steady",
            f"{steady['p50']} / {steady['p95']} / {steady['p99']} / {steady['max']} s",
        ),
    ]
    names = ("webhooks", "receiver", "mariadbd", *SERVICE_NAMES, "anvil", "redis", "generator")
    for name in dict.fromkeys(names):
        per = result["cpu"].get(name, {}).get("per_1k_events")
        rows.append((f"CPU s / 1k events: {name}", "-" if per is None else f"{per:.3f}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}} | {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="withdrawals per second")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of submissions")
    parser.add_argument(
        "--warmup", type=float, default=None, help="s excluded (default min(30, duration/5))"
    )
    parser.add_argument("--drain", type=float, default=180.0, help="s to wait for the rest")
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--progress-seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="a few seconds at a low rate")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--receiver", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver is not None:
        return receiver_main(args.receiver)
    if args.smoke:
        args.rate, args.duration, args.drain = 5.0, 4.0, 90.0
        args.generators, args.progress_seconds = 1, 5.0
    from svc_webhooks.settings import WebhooksSettings

    defaults = WebhooksSettings()
    config = {
        "benchmark": "webhooks",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "confirmations": CONFIRMATIONS,
        "block_time_s": 2,
        "endpoints": "one, subscribed to every event type, on a receiver process on loopback "
        "verifying every signature (standardwebhooks)",
        "sender": {
            "max_in_flight": int(SENDER_ENV["WEBHOOKS_MAX_IN_FLIGHT"]),
            "max_in_flight_per_endpoint": int(SENDER_ENV["WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT"]),
            "poll_seconds": defaults.poll_seconds,
            "timeout_seconds": defaults.timeout_seconds,
        },
        "database": "MariaDB (a database of its own on 127.0.0.1:3306)",
        "generator_processes": args.generators,
        "log_level": args.log_level,
        "cpus": os.cpu_count(),
        "load_at_start": uptime_load(),
        "versions": versions(),
        "smoke": args.smoke,
    }
    print("configuration:", json.dumps(config), flush=True)
    result = run(args)
    print_table(result)
    verdicts = {
        "every_event_delivered": result["events_missing"] == 0 and result["events_expected"] > 0,
        "lag_p95": (result["lag_s"]["p95"] or math.inf) <= TARGETS["lag_p95_s"],
        "in_order": result["out_of_order"] == 0,
    }
    print("targets:", json.dumps({"targets": TARGETS, "met": verdicts}), flush=True)
    out = args.out or RESULTS / f"webhooks{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": config, "result": result, "targets": verdicts, "time": time.time()}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
