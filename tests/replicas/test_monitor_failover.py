"""Two monitor replicas on a real stack (MariaDB, Redis, anvil, the services as processes):
one holds the lease and acts; a leader paused past its lease (SIGSTOP) is replaced, and after
SIGCONT it commits, publishes and re-sends nothing; a killed leader is replaced within the lease
time. Every withdrawal is paid exactly once, judged from the chain."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2_grpc
from devstack.config import free_port
from devstack.exactly_once import Submitted, check_exactly_once
from devstack.harness import HarnessConfig, HarnessStack
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db import leases
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.states import State

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2.0
POLL_SECONDS = 0.3
LEASE = "monitor:polygon"
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessStack]:
    config = HarnessConfig(
        var_dir=tmp_path_factory.mktemp("replicas"),
        block_time=1,
        confirmations=2,
        env={
            "PROCESSOR_BATCH_MAX_WAIT_SECONDS": "0.3",
            "MONITOR_POLL_SECONDS": str(POLL_SECONDS),
            "MONITOR_LEASE_SECONDS": str(LEASE_SECONDS),
        },
    )
    with HarnessStack(config) as running:
        yield running


@pytest.fixture(scope="module")
def second_monitor(stack: HarnessStack) -> Iterator[subprocess.Popen[bytes]]:
    """Another `python -m svc_monitor` with the stack's monitor's environment (its own ports)."""
    spec = stack.child("monitor").spec
    assert spec.env is not None
    env = {
        **spec.env,
        "MONITOR_GRPC_PORT": str(free_port()),
        "MONITOR_METRICS_PORT": str(free_port()),
    }
    log = (stack.config.var_dir / "monitor-2.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "svc_monitor"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
    process.wait(30)
    log.close()


def _holder(stack: HarnessStack) -> tuple[int, int] | None:
    """The leader's pid and fencing token, from the lease row."""
    with stack.sessions()() as session:
        held = leases.holder_of(session, LEASE)
    if held is None:
        return None
    return int(held[0].split(":")[1]), held[1]


def _submit(stack: HarnessStack, count: int) -> list[Submitted]:
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    out: list[Submitted] = []
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        for index in range(count):
            recipient = fresh_address()
            units = (index + 1) * 1_000_000 + 500_000
            request = create_request(amount=f"{index + 1}.5", recipient=recipient)
            created = stub.CreateWithdrawal(request, metadata=metadata, timeout=15)
            out.append(Submitted(created.name.removeprefix("withdrawals/"), recipient, units))
    return out


def _completed(stack: HarnessStack, submitted: list[Submitted]) -> None:
    ids = [s.withdrawal_id for s in submitted]

    def probe() -> bool | None:
        with stack.sessions()() as session:
            states = session.scalars(select(Withdrawal.state).where(Withdrawal.id.in_(ids))).all()
        return True if len(states) == len(ids) and set(states) == {State.COMPLETED.value} else None

    wait_until(probe, TIMEOUT, lambda: f"not all COMPLETED:\n{stack.log_tail('monitor', 20)}")


def _entries_since(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def _taken_at(path: Path, token: int) -> dt.datetime:
    """When the replica logging to `path` took the lease with `token` (after its commit)."""
    for entry in _entries_since(path):
        taken = entry.get("msg") == "monitor lease taken: this replica is the leader"
        if taken and entry.get("token") == token:
            return dt.datetime.fromisoformat(entry["ts"].removesuffix("Z"))
    raise AssertionError(f"{path.name} never logged taking the lease with token {token}")


def test_a_paused_leader_is_replaced_and_writes_nothing_after_it_resumes(
    stack: HarnessStack, second_monitor: subprocess.Popen[bytes]
) -> None:
    logs = {
        stack.pid("monitor"): stack.logs_dir / "monitor.log",
        second_monitor.pid: stack.config.var_dir / "monitor-2.log",
    }
    first = wait_until(lambda: _holder(stack), 30, lambda: "no monitor took the lease")
    assert first[0] in logs, (first, logs)
    submitted = _submit(stack, 3)
    _completed(stack, submitted)  # the leader acts

    leader, token = first
    standby = next(pid for pid in logs if pid != leader)
    os.kill(leader, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        during = _submit(stack, 3)
        taken = wait_until(
            lambda: ((h := _holder(stack)) and h[0] == standby and h) or None,
            TIMEOUT,
            lambda: f"the standby never took the lease: {_holder(stack)}",
        )
        failover = time.monotonic() - stopped_at
        assert taken[1] == token + 1
        _completed(stack, during)  # paid by the new leader while the old one is paused
    finally:
        offset = logs[leader].stat().st_size
        os.kill(leader, signal.SIGCONT)
    time.sleep(LEASE_SECONDS * 2 + POLL_SECONDS * 3)  # the old leader runs again, polls on
    entries = _entries_since(logs[leader], offset)
    messages = [str(entry.get("msg")) for entry in entries]
    assert "monitor lease lost: standing by" in messages, messages
    assert not any("re-broadcast" in message for message in messages), messages
    # A poll the pause interrupted may still report what it committed before the takeover;
    # nothing it committed came after (the fence refuses the commit).
    taken_at = _taken_at(logs[standby], token + 1)
    for entry in entries:
        if entry.get("msg") == "poll settled payouts":
            assert entry["last_commit"] != "None", entry
            assert dt.datetime.fromisoformat(entry["last_commit"]) < taken_at, (entry, taken_at)
    assert _holder(stack) == (standby, token + 1)  # it did not take the lease back
    after = _submit(stack, 2)
    _completed(stack, after)

    # A killed leader: the former one, now standing by, takes over.
    killed_at = time.monotonic()
    if standby == second_monitor.pid:
        second_monitor.kill()
    else:
        stack.kill("monitor")
    wait_until(
        lambda: ((h := _holder(stack)) and h[1] == token + 2) or None,
        TIMEOUT,
        lambda: f"nobody took over from the killed leader: {_holder(stack)}",
    )
    kill_failover = time.monotonic() - killed_at
    last = _submit(stack, 2)
    _completed(stack, last)

    everything = submitted + during + after + last
    boot = stack.result
    verdict = check_exactly_once(
        stack.web3(), stack.sessions(), boot.token_address, boot.payout_vault, everything
    )
    assert verdict.ok and verdict.paid_once == len(everything), verdict.summary()
    # Reported, not asserted (timings belong to benchmarks): the lease time plus a poll or two.
    print(f"monitor failover: {failover:.1f} s after SIGSTOP, {kill_failover:.1f} s after SIGKILL")
