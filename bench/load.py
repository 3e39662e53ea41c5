"""The open-loop load every end-to-end benchmark shares (`bench.e2e`, `bench.recovery`), and the
few things each of them reads around it (versions, machine load, the exactly-once verdict).

Open loop: submission i is scheduled at `t0 + i / rate` whatever happened to the earlier ones.
Several generator processes (spawned, each an asyncio gRPC client with one channel) share the
schedule round-robin, so one Python process's CPU never caps the offered rate, and every
submission records when it was scheduled, sent and answered, so a slow or absent gateway shows
up as latency or refusals instead of silently lowering the offered rate.

A load either runs a fixed number of submissions (`run_generators`, what `bench.e2e` needs) or
until it is told to stop (`OpenLoopLoad.stop`, what `bench.recovery` needs: it cannot know in
advance how long its warm-up and its kills will take). Each submission goes to a fresh recipient
of its own, so the chain alone can tell afterwards whether it was paid, and how many times.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

AMOUNT = "1"  # USDC per withdrawal: 1,000,000 USDC in the vault pays a million of them
AMOUNT_BASE_UNITS = 10**6
MAX_OUTSTANDING = 4_000  # per generator process: a stalled gateway must not exhaust memory
REQUEST_TIMEOUT_S = 60.0

FAST_RECONNECT: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
)
"""Channel options for a generator that must see a restarted gateway as soon as it listens.
gRPC's default reconnect backoff (1 s, x1.6 per failed attempt, jittered) would otherwise add
up to several seconds of the client's own making to a gateway's measured recovery."""


@dataclass
class Submission:
    index: int
    scheduled: float  # epoch seconds
    sent: float
    answered: float
    withdrawal_id: str  # "" when refused
    recipient: str
    error: str = ""


@dataclass
class GeneratorReport:
    submissions: list[Submission] = field(default_factory=list)
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class LoadPlan:
    """What every generator process shares: where to send, and the schedule."""

    target: str
    api_key: str
    run_id: str
    t0: float
    rate: float
    count: int
    """Submissions at most (a load that is stopped early schedules fewer)."""
    workers: int
    channel_options: tuple[tuple[str, int], ...] = ()


def recipient_for(run_id: str, index: int) -> str:
    """A fresh (never funded) recipient of its own for each submission."""
    return "0x" + hashlib.sha256(f"bench-e2e/{run_id}/{index}".encode()).hexdigest()[:40]


def request_id_for(run_id: str, index: int) -> str:
    """The idempotency key of submission `index`: a retry with it must return the same
    withdrawal, never store a second one."""
    return f"{run_id}-{index}"


def create_request(run_id: str, index: int) -> Any:
    """The CreateWithdrawalRequest of submission `index` (the same bytes for a retry)."""
    from assetwithdrawal.withdrawal.v1 import withdrawal_pb2

    return withdrawal_pb2.CreateWithdrawalRequest(
        request_id=request_id_for(run_id, index),
        withdrawal=withdrawal_pb2.Withdrawal(
            token="USDC", recipient_address=recipient_for(run_id, index), amount=AMOUNT
        ),
    )


async def _generate(plan: LoadPlan, worker: int, stop: Event | None) -> list[Submission]:
    import grpc

    from assetwithdrawal.withdrawal.v1 import withdrawal_pb2_grpc

    metadata = (("authorization", f"Bearer {plan.api_key}"),)
    results: list[Submission] = []
    outstanding = asyncio.Semaphore(MAX_OUTSTANDING)
    async with grpc.aio.insecure_channel(plan.target, options=plan.channel_options) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)

        async def submit(index: int, scheduled: float) -> None:
            request = create_request(plan.run_id, index)
            recipient = request.withdrawal.recipient_address
            sent = time.time()
            try:
                created = await stub.CreateWithdrawal(
                    request, metadata=metadata, timeout=REQUEST_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                results.append(
                    Submission(index, scheduled, sent, time.time(), "", recipient, exc.code().name)
                )
            else:
                withdrawal_id = created.name.removeprefix("withdrawals/")
                results.append(
                    Submission(index, scheduled, sent, time.time(), withdrawal_id, recipient)
                )
            finally:
                outstanding.release()

        tasks: set[asyncio.Task[None]] = set()
        for index in range(worker, plan.count, plan.workers):
            scheduled = plan.t0 + index / plan.rate
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            await outstanding.acquire()
            task = asyncio.create_task(submit(index, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    return results


def _generator_main(plan: LoadPlan, worker: int, stop: Event | None, out: Connection) -> None:
    """One generator process: its share of the schedule, then its report through `out`."""
    started = time.process_time()
    submissions = asyncio.run(_generate(plan, worker, stop))
    report = GeneratorReport(submissions, time.process_time() - started)
    out.send(json.dumps(asdict(report)))
    out.close()


class OpenLoopLoad:
    """The generator processes of one plan: `start()`, optionally `stop()` early, `join()`."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []

    def start(self) -> OpenLoopLoad:
        for worker in range(self.plan.workers):
            receive, send = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(
                target=_generator_main,
                args=(self.plan, worker, self._stop, send),
                name=f"bench-generator-{worker}",
            )
            process.start()
            send.close()  # the child holds its end; ours would keep recv() from seeing EOF
            self._pipes.append(receive)
            self._processes.append(process)
        return self

    def stop(self) -> None:
        """Schedule nothing more; submissions already sent are still answered and reported."""
        self._stop.set()

    def join(self) -> GeneratorReport:
        report = GeneratorReport()
        for receive, process in zip(self._pipes, self._processes, strict=True):
            try:
                raw = json.loads(receive.recv())
            except EOFError:
                process.join(5)
                raise RuntimeError(
                    f"{process.name} exited ({process.exitcode}) without its report"
                ) from None
            report.submissions.extend(Submission(**s) for s in raw["submissions"])
            report.cpu_seconds += raw["cpu_seconds"]
            process.join(30)
        report.submissions.sort(key=lambda s: s.index)
        return report

    def terminate(self) -> None:
        """Stop and reap every generator process without waiting for a report (on failure)."""
        self._stop.set()
        for process in self._processes:
            process.join(REQUEST_TIMEOUT_S + 5)
            if process.is_alive():
                process.terminate()


def run_generators(
    target: str, api_key: str, run_id: str, t0: float, rate: float, count: int, workers: int
) -> GeneratorReport:
    """`count` submissions at `rate` from `t0`, shared by `workers` processes; blocks."""
    return OpenLoopLoad(LoadPlan(target, api_key, run_id, t0, rate, count, workers)).start().join()


# ----------------------------------------------------------------------------- around a run


def epoch(naive_utc: dt.datetime) -> float:
    """Epoch seconds of a naive UTC timestamp as the database stores them."""
    return naive_utc.replace(tzinfo=dt.UTC).timestamp()


def versions() -> dict[str, str]:
    def run(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout else "unknown"

    from devstack.anvil import find_anvil_binary

    anvil = "unknown"
    with contextlib.suppress(Exception):
        anvil = run([str(find_anvil_binary()), "--version"])
    return {
        "python": platform.python_version(),
        "anvil": anvil,
        "redis": run(["redis-server", "--version"]),
        "mariadb": run(["mariadbd", "--version"]),
        "git": run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parents[1]),
                "describe",
                "--always",
                "--dirty",
            ]
        ),
    }


def uptime_load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def sayer(name: str) -> Any:
    def say(message: str) -> None:
        print(f"[{name}] {message}", flush=True)

    return say


def exactly_once(stack: Any, accepted: Sequence[Submission], *, drained: bool) -> dict[str, Any]:
    """The chain's verdict. `ok`: nothing paid twice or wrongly, nothing the chain and the
    database disagree on, no vault skip, and (for a run that must drain) nothing left open.
    A run stopped with a backlog still in flight reports that backlog apart."""
    from devstack.exactly_once import Submitted, check_exactly_once
    from withdrawal_shared.states import TERMINAL, State

    # The chain is read first and the database after: a run stopped with work in flight
    # would go on completing withdrawals paid after the head the check read. The processor
    # and the monitor are paused (SIGSTOP) for the check, so both are read at one instant.
    paused = [pid for pid in (stack.pid("processor"), stack.pid("monitor")) if pid is not None]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        verdict = check_exactly_once(
            stack.web3(),
            stack.sessions(),
            stack.result.token_address,
            stack.result.payout_vault,
            [Submitted(s.withdrawal_id, s.recipient, AMOUNT_BASE_UNITS) for s in accepted],
        )
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    not_terminal = sum(
        n
        for state, n in verdict.states.items()
        if state == "MISSING" or State(state) not in TERMINAL
    )
    consistent = (
        len(verdict.lost) == not_terminal
        and not verdict.double_paid
        and not verdict.wrong_amount
        and not verdict.contract_skips
    )
    return {
        "ok": consistent and (not_terminal == 0 or not drained),
        "chain_and_database_agree": consistent,
        "not_terminal_at_stop": not_terminal,
        **verdict.summary(),
    }
