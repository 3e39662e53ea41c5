"""Fixtures for the `make up` tests: a running `python -m devstack` whose output
is captured line by line, with free ports and a var/ of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.config import SAFE_OWNERS, free_port, free_ports_in_a_row
from svc_signer.keys.keystore import create_keystore, write_private_file

REPO = Path(__file__).resolve().parents[2]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class StackRun:
    """A stack process and everything it printed so far."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    var_dir: Path
    lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def start_reader(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        """Block until a printed line contains `text`; fail with the whole output otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    break
                self._changed.wait(min(remaining, 0.5))
            else:
                return
        time.sleep(0.5)  # let the reader catch the last lines of a dead process
        pytest.fail(
            f"{text!r} not printed within {timeout:g}s (exit code {self.process.poll()}); "
            f"output:\n{self.output}"
        )

    def line_starting(self, prefix: str) -> str:
        found = [line for line in self.lines if line.startswith(prefix)]
        assert found, f"no line starts with {prefix!r}; output:\n{self.output}"
        return found[-1]

    def ports(self) -> dict[str, int]:
        names = (
            "STACK_ANVIL_PORT",
            "STACK_HTTP_PORT",
            "STACK_GRPC_PORT",
            "STACK_SIGNER_PORT",
            "STACK_PROCESSOR_PORT",
            "STACK_MONITOR_PORT",
            "STACK_WEBHOOKS_PORT",
        )
        ports = {name: int(self.env[name]) for name in names}
        first = int(self.env["STACK_SAFE_OWNER_PORT"])  # the treasury Safe's owner signers
        ports.update({f"owner signer {i + 1}": first + i for i in range(SAFE_OWNERS)})
        return ports


def owner_keystores(var_dir: Path) -> None:
    """The treasury Safe owner signers' keystores, made ahead with a cheap KDF (pbkdf2, 2
    rounds, as `tests/support/signers.py` does) where `make up` would spend about two seconds
    of scrypt CPU on each; `test_make_up_pays_a_withdrawal_and_stops_cleanly` leaves them to
    the owner signers."""
    for index in range(1, SAFE_OWNERS + 1):
        directory = var_dir / f"safe_owner_{index}"
        password = secrets.token_urlsafe(16)
        write_private_file(directory / "keystore.password", password.encode("ascii"))
        create_keystore(directory / "keystore.json", password, kdf="pbkdf2", iterations=2)


def stack_env(
    var_dir: Path, redis_url: str, redis_prefix: str, *, ready_owner_keystores: bool = True
) -> dict[str, str]:
    """`make up`'s environment with free ports and a var/ of its own; the owner signers'
    keystores made ahead (`owner_keystores`) unless `ready_owner_keystores` is false."""
    if ready_owner_keystores:
        owner_keystores(var_dir)
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # the default: a fresh SQLite file under AWS_VAR_DIR
    env.pop("STACK_HOT_WALLETS", None)  # the default: two hot wallets
    env.update(
        {
            "AWS_VAR_DIR": str(var_dir),
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_prefix,
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    taken: set[str] = set()
    for name in (
        "STACK_ANVIL_PORT",
        "STACK_HTTP_PORT",
        "STACK_GRPC_PORT",
        "STACK_SIGNER_PORT",
        "STACK_PROCESSOR_PORT",
        "STACK_MONITOR_PORT",
        "STACK_WEBHOOKS_PORT",
        "STACK_SIGNER_HEALTH_PORT",
        "STACK_GATEWAY_METRICS_PORT",
        "STACK_PROCESSOR_METRICS_PORT",
        "STACK_SIGNER_METRICS_PORT",
        "STACK_MONITOR_METRICS_PORT",
        "STACK_WEBHOOKS_METRICS_PORT",
    ):
        port = free_port()
        while str(port) in taken:  # each picked alone: two may coincide
            port = free_port()
        taken.add(str(port))
        env[name] = str(port)
    # The treasury Safe's three owner signers (on by default) take each of these and the next
    # two ports.
    for name in (
        "STACK_SAFE_OWNER_PORT",
        "STACK_SAFE_OWNER_HEALTH_PORT",
        "STACK_SAFE_OWNER_METRICS_PORT",
    ):
        env[name] = str(free_ports_in_a_row(SAFE_OWNERS))
    env.pop("STACK_TREASURY_SAFE", None)  # the default: on
    return env


def launch(argv: list[str], env: dict[str, str], var_dir: Path) -> StackRun:
    """Start `argv` in a session of its own, so a test can Ctrl-C its whole process group as
    a terminal would."""
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    run = StackRun(process, env, var_dir)
    run.start_reader()
    return run


def stop(run: StackRun) -> None:
    """Teardown safety net: SIGTERM (the stack stops its children), then SIGKILL."""
    if run.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, signal.SIGTERM)
        try:
            run.process.wait(30)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(10)


@pytest.fixture
def stack_env_for_test(tmp_path: Path, redis_url: str, redis_prefix: str) -> dict[str, str]:
    # `make up` as a user runs it: every signer creates its own keystore.
    return stack_env(tmp_path / "var", redis_url, redis_prefix, ready_owner_keystores=False)


@pytest.fixture
def stack(stack_env_for_test: dict[str, str]) -> Iterator[StackRun]:
    """The README's `make up`, for real (its install steps find everything installed), run as
    a top-level make (not nested in `make test`)."""
    env = {
        k: v for k, v in stack_env_for_test.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    run = launch(["make", "--no-print-directory", "up"], env, Path(env["AWS_VAR_DIR"]))
    yield run
    stop(run)
