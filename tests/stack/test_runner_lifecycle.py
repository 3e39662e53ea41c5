"""The runner's start and stop, for real: var/stack.json appears only when everything serves,
and SIGINT or SIGTERM sent to the runner's pid alone stops the whole stack, exit code 0 (130
when it was still starting), with no process of its own left behind.

Each test starts the runner in a session of its own (`launch`), so a signal reaches only the pid
it is sent to, never a terminal's process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.probes import health_status
from tests.stack.conftest import StackRun, launch, port_open, stack_env, stop

pytestmark = pytest.mark.chain

# Where each service's gRPC health answers without a client certificate (the signer's own port
# wants one: TLS is on in `make up`).
GRPC_PORTS = (
    "STACK_GRPC_PORT",
    "STACK_SIGNER_HEALTH_PORT",
    "STACK_PROCESSOR_PORT",
    "STACK_MONITOR_PORT",
)


# -- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a live pid, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def parent_of(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[0] if stat is not None else None


def descendants(root: int) -> dict[int, int]:
    """Every live process below `root` (children, their children, ...): pid -> start time."""
    parents: dict[int, int] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[0]
            started[int(entry.name)] = stat[2]
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started[pid]
                frontier.append(pid)
    return found


def still_running(recorded: dict[int, int]) -> list[str]:
    """The recorded processes that still run (same pid, same start time, not a zombie)."""
    left: list[str] = []
    for pid, started in recorded.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                command = "?"
            left.append(f"{pid}: {command.strip()}")
    return left


def wait_gone(recorded: dict[int, int], timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := still_running(recorded)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def stack_processes(run: StackRun, runner_pid: int) -> dict[int, int]:
    """The runner's processes once it is up: the four services and anvil at least."""
    processes = descendants(runner_pid)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes]
    for needed in (b"svc_signer", b"svc_gateway", b"svc_processor", b"svc_monitor", b"anvil"):
        assert any(needed in command for command in commands), (needed, run.output)
    return processes


# -- the stack.json watcher -------------------------------------------------------------------


@dataclass
class FirstSight:
    """What was true the moment var/stack.json first existed."""

    stack_json: Path
    grpc_targets: dict[str, str]
    healthz_url: str
    seen_at: float | None = None
    health: dict[str, str] = field(default_factory=dict)
    healthz: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def watch(self, give_up: threading.Event) -> None:
        while not self.stack_json.exists():
            if give_up.wait(0.005):
                return
        self.seen_at = time.monotonic()
        self.health = {name: health_status(target) for name, target in self.grpc_targets.items()}
        try:
            with urllib.request.urlopen(self.healthz_url, timeout=2) as response:
                self.healthz = f"{response.status} {response.read().decode()}"
        except OSError as exc:
            self.healthz = f"failed: {exc}"
        self.done.set()


def test_stack_json_appears_only_once_everything_serves_and_sigterm_stops_it_all(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    var_dir = tmp_path / "var"
    env = stack_env(var_dir, redis_url, redis_prefix)
    sight = FirstSight(
        stack_json=var_dir / "stack.json",
        grpc_targets={name: f"127.0.0.1:{env[name]}" for name in GRPC_PORTS},
        healthz_url=f"http://127.0.0.1:{env['STACK_HTTP_PORT']}/healthz",
    )
    give_up = threading.Event()
    watcher = threading.Thread(target=sight.watch, args=(give_up,), daemon=True)
    watcher.start()
    run = launch([sys.executable, "-m", "devstack"], env, var_dir)
    try:
        run.wait_for("stack is up", timeout=120)
        assert sight.done.wait(10), "the watcher never saw var/stack.json"
        assert sight.health == dict.fromkeys(GRPC_PORTS, "SERVING"), (sight.health, run.output)
        assert sight.healthz.startswith("200 "), (sight.healthz, run.output)
        assert not any(name.startswith(".stack.json") for name in os.listdir(var_dir)), (
            "a temporary file was left beside stack.json"
        )
        processes = stack_processes(run, run.process.pid)

        os.kill(run.process.pid, signal.SIGTERM)  # the runner's pid only
        try:
            code = run.process.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stack did not stop within 40s of SIGTERM; output:\n{run.output}")
        assert code == 0, run.output
        assert wait_gone(processes) == [], run.output
        assert "stack stopped" in run.output
    finally:
        give_up.set()
        stop(run)


def test_sigint_to_the_make_up_python_pid_stops_everything(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    var_dir = tmp_path / "var"
    env = {
        k: v
        for k, v in stack_env(var_dir, redis_url, redis_prefix).items()
        if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    run = launch(["make", "--no-print-directory", "up"], env, var_dir)
    try:
        run.wait_for("stack is up", timeout=120)
        below_make = descendants(run.process.pid)
        (runner_pid,) = [pid for pid in below_make if parent_of(pid) == run.process.pid]
        assert b"devstack" in Path(f"/proc/{runner_pid}/cmdline").read_bytes()
        # stack.json names it, for a script that stops the stack by its pid.
        assert json.loads((var_dir / "stack.json").read_text())["pid"] == runner_pid
        processes = {runner_pid: below_make[runner_pid], **stack_processes(run, runner_pid)}

        os.kill(runner_pid, signal.SIGINT)  # not the process group: `kill -INT <pid>`
        try:
            code = run.process.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stack did not stop within 40s of SIGINT; output:\n{run.output}")
        assert code == 0, run.output  # make exits with the runner's code
        assert wait_gone(processes) == [], run.output
        for name, port in run.ports().items():
            assert not port_open(port), f"{name} {port} still open after the stack stopped"
        assert "SIGINT received" in run.output and "stack stopped" in run.output
    finally:
        stop(run)


class Sampler:
    """Records every process below `root` every 50 ms until stopped: what start-up started."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.update(descendants(self.root))

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def test_sigint_while_starting_stops_what_was_started(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    var_dir = tmp_path / "var"
    env = stack_env(var_dir, redis_url, redis_prefix)
    run = launch([sys.executable, "-m", "devstack"], env, var_dir)
    sampler = Sampler(run.process.pid)
    try:
        # anvil and the signer run, the bootstrap is deploying and funding.
        run.wait_for("bootstrapping the chain and the database", timeout=90)
        os.kill(run.process.pid, signal.SIGINT)
        try:
            code = run.process.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"start-up did not stop within 40s of SIGINT; output:\n{run.output}")
        processes = sampler.stop()
        assert code == 130, run.output
        assert "start-up interrupted: stopping what was started" in run.output
        assert "SIGINT received: stopping once the current start-up step ends" in run.output
        assert processes, "the sampler saw no process below the runner"
        assert wait_gone(processes) == [], run.output
        assert not (var_dir / "stack.json").exists(), "stack.json written for a stack not up"
        assert "starting gateway" not in run.output, "start-up went on after SIGINT"
        for name, port in run.ports().items():
            assert not port_open(port), f"{name} {port} still open after the stack stopped"
    finally:
        sampler.stop()
        stop(run)
