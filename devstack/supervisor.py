"""A small foreground process supervisor: prefixed output, restarts with backoff, clean stop.

Each child runs in its own process group (so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order), with stdout and stderr merged into one
pipe. A reader thread per child prints every line as `name      | line` (the name coloured
when the output is a terminal and NO_COLOR is unset) and appends it to the child's log file.

`Supervisor.poll()` (called in a loop by `run()`) restarts a child that exited while the
supervisor was not stopping, after a delay that starts at `backoff_initial` (1 s) and doubles
up to `backoff_max` (30 s); a child that ran at least `stable_after` seconds starts again from
the initial delay. `stop_all()` sends SIGTERM to every child's process group, waits up to
`stop_grace` (10 s) for all of them, then SIGKILLs what is left.

All process creation happens in the thread that calls `start()` / `poll()`; reader threads
only read.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from withdrawal_shared.settings import SUPERVISOR_PID_ENV

NAME_WIDTH = 9  # len("processor")
_COLORS = ("36", "35", "33", "32", "34", "91", "96", "95")
_RESET = "\x1b[0m"


def backoff_delays(initial: float = 1.0, maximum: float = 30.0) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... capped at maximum (1, 2, 4, 8, 16, 30, 30, ...)."""
    delay = initial
    while True:
        yield min(delay, maximum)
        delay = min(delay * 2, maximum)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    """The child's whole environment (None: inherit the supervisor's)."""
    cwd: Path | None = None
    log_path: Path | None = None
    """Where the child's output is also appended (besides the prefixed console)."""


@dataclass
class Child:
    spec: ChildSpec
    color: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    last_exit_code: int | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    _delays: Iterator[float] | None = None
    _reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    def __init__(
        self,
        out: TextIO | None = None,
        *,
        color: bool | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        stop_grace: float = 10.0,
        name_width: int = NAME_WIDTH,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        if color is None:
            color = _isatty(self.out) and not os.environ.get("NO_COLOR")
        self.color = color
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_grace = stop_grace
        self.name_width = name_width
        self.children: dict[str, Child] = {}
        self.stopping = False
        # Re-entrant: a signal handler on the main thread may print while it holds the lock.
        self._lock = threading.RLock()

    # -- output ----------------------------------------------------------------------------

    def emit(self, name: str, line: str, color: str = "1") -> None:
        """Write one line prefixed by the padded (and, on a terminal, coloured) name."""
        label = f"{name:<{self.name_width}}|"
        if self.color:
            label = f"\x1b[{color}m{label}{_RESET}"
        with self._lock:
            try:
                self.out.write(f"{label} {line}\n")
                self.out.flush()
            except (OSError, ValueError):  # stdout closed or a broken pipe: keep supervising
                pass

    def say(self, message: str) -> None:
        """A line from the supervisor itself."""
        self.emit("stack", message)

    def raw(self, line: str) -> None:
        """A line without prefix (e.g. a command meant to be copied and pasted)."""
        with self._lock:
            try:
                self.out.write(f"{line}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    # -- starting and restarting -----------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        if spec.name in self.children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        child = Child(spec, _COLORS[len(self.children) % len(_COLORS)])
        child._delays = backoff_delays(self.backoff_initial, self.backoff_max)
        self.children[spec.name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The services stop by themselves if this process dies without stopping them
        # (`withdrawal_shared.runtime.stop_when_orphaned`).
        env = {**(spec.env if spec.env is not None else os.environ)}
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        process = subprocess.Popen(  # noqa: S603 - argv built by the stack, no shell
            list(spec.argv),
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        child.process = process
        child.started_at = time.monotonic()
        child.restart_at = None
        assert process.stdout is not None
        reader = threading.Thread(
            target=self._read_lines,
            args=(child, process.stdout),
            name=f"supervisor-{spec.name}",
            daemon=True,
        )
        child._reader = reader
        reader.start()

    def _read_lines(self, child: Child, stream: IO[bytes]) -> None:
        log = child.spec.log_path.open("ab") if child.spec.log_path is not None else None
        try:
            for raw in iter(stream.readline, b""):
                if log is not None:
                    log.write(raw)
                    log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                child.tail.append(line)
                self.emit(child.name, line, child.color)
        finally:
            stream.close()
            if log is not None:
                log.close()

    def poll(self) -> None:
        """Notice exited children and restart those whose backoff delay has passed."""
        if self.stopping:
            return
        now = time.monotonic()
        for child in list(self.children.values()):
            process = child.process
            if process is None:
                continue
            if child.restart_at is None:
                code = process.poll()
                if code is None:
                    continue
                child.last_exit_code = code
                if child._reader is not None:
                    child._reader.join(1.0)  # print its last words before ours
                if now - child.started_at >= self.stable_after:
                    child._delays = backoff_delays(self.backoff_initial, self.backoff_max)
                assert child._delays is not None
                delay = next(child._delays)
                child.restart_at = now + delay
                self.say(
                    f"{child.name} exited unexpectedly with code {code}; restarting it in "
                    f"{delay:g}s (restart #{child.restarts + 1}); its log: "
                    f"{child.spec.log_path or 'above'}"
                )
            elif now >= child.restart_at:
                child.restarts += 1
                self.say(f"restarting {child.name} (restart #{child.restarts})")
                self._spawn(child)

    def run(self, stop: threading.Event, interval: float = 0.1) -> None:
        """Supervise until `stop` is set (it does not stop the children: see `stop_all`)."""
        while not stop.is_set():
            self.poll()
            stop.wait(interval)

    # -- stopping --------------------------------------------------------------------------

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every child, wait up to `stop_grace`, SIGKILL the rest; exit codes by name."""
        self.stopping = True
        live = [c for c in self.children.values() if c.running]
        for child in reversed(live):
            self.say(f"stopping {child.name} (pid {child.pid})")
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for child in live:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(
                    f"{child.name} did not stop within {self.stop_grace:g}s of SIGTERM: killing it"
                )
                _signal_group(child, signal.SIGKILL)
                child.process.wait(5.0)
        codes: dict[str, int | None] = {}
        for child in self.children.values():
            if child.process is not None:
                # Anything left in its process group (grandchildren) goes too.
                _signal_group(child, signal.SIGKILL)
                codes[child.name] = child.process.poll()
            if child._reader is not None:
                child._reader.join(2.0)
        for child in live:
            self.say(f"{child.name} stopped (exit code {codes.get(child.name)})")
        return codes


def _signal_group(child: Child, signum: signal.Signals) -> None:
    if child.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
