"""A service started by the stack's supervisor stops once that supervisor dies without
stopping it (`withdrawal_shared.runtime.stop_when_orphaned`), and watches nothing otherwise.
Real processes: a parent that starts a child the way `devstack.supervisor` does, then is
SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from withdrawal_shared.runtime import pid_alive
from withdrawal_shared.settings import SUPERVISOR_PID_ENV

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from withdrawal_shared.runtime import stop_when_orphaned
    stopping = []  # SIGTERM asks for a graceful stop, as in a service
    hangs = sys.argv[1] == "hang"  # a stop that never ends
    signal.signal(signal.SIGTERM, lambda *_: None if hangs else stopping.append(True))
    watching = stop_when_orphaned(poll_seconds=0.05, kill_after=1.0) is not None
    print("watching" if watching else "not watching", flush=True)
    deadline = time.monotonic() + 60
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.02)
    """
)

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    env = {**os.environ}
    if sys.argv[1] == "mine":
        env[sys.argv[2]] = str(os.getpid())
    elif sys.argv[1] == "other":
        env[sys.argv[2]] = "1"
    elif sys.argv[1] == "gone":
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        env[sys.argv[2]] = done.stdout.strip()
    child = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[4]], env=env,
                             stdout=subprocess.PIPE, text=True)
    print(child.pid, child.stdout.readline().strip(), flush=True)
    time.sleep(60)
    """
)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _orphan(mode: str, within: float, stop: str = "ends") -> tuple[str, bool]:
    """Start a parent whose child has `SUPERVISOR_PID_ENV` set by `mode` (the parent's pid,
    none, a live process's, an exited process's), SIGKILL the parent;
    (what the child said, whether it exited within `within` s; it polls every 0.05 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(SUPERVISOR_PID_ENV, None)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, SUPERVISOR_PID_ENV, CHILD, stop],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid_text, _, said = parent.stdout.readline().strip().partition(" ")
    child = int(pid_text)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not _gone(child):
        time.sleep(0.05)
    exited = _gone(child)
    if not exited:
        os.kill(child, signal.SIGKILL)
    return said, exited


def test_a_child_of_a_supervisor_that_dies_stops() -> None:
    said, exited = _orphan("mine", within=5)
    assert said == "watching"
    assert exited


def test_a_stop_that_hangs_ends_with_sigkill() -> None:
    said, exited = _orphan("mine", within=5, stop="hang")
    assert said == "watching"
    assert exited


def test_a_child_whose_supervisor_died_while_it_started_stops() -> None:
    # The variable names a process that no longer exists: this child's supervisor died
    # before the child got as far as watching it.
    said, exited = _orphan("gone", within=5)
    assert said == "watching"
    assert exited


def test_a_process_not_started_by_its_supervisor_is_left_alone() -> None:
    for mode in ("none", "other"):  # the variable unset, or naming another process
        said, exited = _orphan(mode, within=1.5)
        assert said == "not watching"
        assert not exited


def test_pid_alive_is_false_for_an_exited_process_reaped_or_not() -> None:
    """A process that exited is not alive while it is a zombie (not reaped yet: kill(0)
    still finds it) nor after it was reaped; a running one, and this one, are."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    try:
        assert pid_alive(child.pid) and pid_alive(os.getpid())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.02)
        os.kill(child.pid, 0)  # a zombie: still there for kill(0)
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert not pid_alive(child.pid)
