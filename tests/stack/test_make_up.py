"""`make up` end to end: the stack starts from nothing, a pasted curl creates a withdrawal that
gets paid on chain, and Ctrl-C stops everything cleanly.

The stack runs as `python -m devstack` (what `make up` runs after `make deps`;
`test_make_up_target_runs_the_stack_module` checks that wiring) with a var/ of its own, free
ports, the suite's Redis under a unique prefix and the default fresh SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from tests.stack.conftest import REPO, StackRun, launch, port_open, stack_env, stop
from withdrawal_shared.chain.contracts import balance_of
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.chain.safe import safe_owners, safe_threshold

pytestmark = pytest.mark.chain

TERMINAL = {"STATE_COMPLETED", "STATE_FAILED", "STATE_REJECTED", "STATE_CANCELLED"}


def run_curl(run: StackRun, command: str) -> dict[str, Any]:
    """Run a printed curl the way a user pastes it: in bash, after the printed line that reads
    the API key from stack.json, on a PATH without uuidgen or jq."""
    key_line = run.line_starting("KEY=$(")
    assert command.startswith("curl ")
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", f"{key_line}\n{command}"],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}"
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"{command}\nanswered non-JSON: {done.stdout!r}")
    return answer


def test_make_up_pays_a_withdrawal_and_stops_cleanly(stack: StackRun) -> None:
    stack.wait_for("stack is up", timeout=120)

    stack_json = stack.var_dir / "stack.json"
    assert stat.S_IMODE(stack_json.stat().st_mode) == 0o600
    info = json.loads(stack_json.read_text())
    ports = stack.ports()
    assert info["rest_base_url"] == f"http://127.0.0.1:{ports['STACK_HTTP_PORT']}"
    assert info["grpc_target"] == f"127.0.0.1:{ports['STACK_GRPC_PORT']}"
    assert info["rpc_url"] == f"http://127.0.0.1:{ports['STACK_ANVIL_PORT']}"
    assert info["chain_id"] == 137
    assert info["api_key"].startswith("awk_")
    assert Web3.is_checksum_address(info["tokens"]["USDC"])
    assert Web3.is_checksum_address(info["hot_wallet"])
    # STACK_HOT_WALLETS (default 2): every wallet the signer holds is registered.
    hot_wallets = info["hot_wallets"]
    assert len(set(hot_wallets)) == 2 and hot_wallets[0] == info["hot_wallet"]
    assert all(Web3.is_checksum_address(w) for w in hot_wallets)
    assert (stack.var_dir / "signer" / "keystore-1.json").exists()
    assert Web3.is_checksum_address(info["payout_contract"])
    # STACK_TREASURY_SAFE (on by default): a 2-of-3 Safe of three owner signers' keys, each in a
    # keystore of its own under var/, owns the vault; the processor calls those signers.
    owner_port = int(stack.env["STACK_SAFE_OWNER_PORT"])
    assert info["safe_owner_signers"] == [f"127.0.0.1:{owner_port + i}" for i in range(3)]
    for index in (1, 2, 3):
        assert len(list((stack.var_dir / f"safe_owner_{index}").glob("keystore*.json"))) == 1
    safe = info["treasury_safe"]
    assert Web3.is_checksum_address(safe)
    chain = Web3(Web3.HTTPProvider(info["rpc_url"]))
    assert payout_vault_contract(chain, info["payout_contract"]).functions.owner().call() == safe
    assert safe_threshold(chain, safe) == 2 and len(set(safe_owners(chain, safe))) == 3
    assert info["database_url"] == f"sqlite:///{stack.var_dir / 'withdrawals.sqlite3'}"
    assert info["redis_url"] == stack.env["REDIS_URL"]
    # The key is kept in stack.json only: the printed curls read it from there, and neither the
    # stack's output nor the service logs show it.
    assert info["api_key"] not in stack.output
    for log in (stack.var_dir / "logs").glob("*.log"):
        assert info["api_key"] not in log.read_text(errors="replace"), log

    created = run_curl(stack, stack.line_starting("curl -sS -X POST "))
    assert created["name"].startswith("withdrawals/"), created
    assert created["token"] == "USDC"
    assert created["amount"] == "12.5"
    withdrawal_id = created["name"].split("/", 1)[1]
    recipient = Web3.to_checksum_address(created["recipientAddress"])

    get = stack.line_starting("curl -sS ").replace("<id>", withdrawal_id)
    assert "-X POST" not in get
    deadline = time.monotonic() + 90
    current = created
    while time.monotonic() < deadline:
        current = run_curl(stack, get)
        assert current["name"] == created["name"]
        if current["state"] in TERMINAL:
            break
        time.sleep(1)
    assert current["state"] == "STATE_COMPLETED", (
        f"withdrawal ended as {current}; stack output:\n{stack.output}"
    )

    w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
    token = Web3.to_checksum_address(info["tokens"]["USDC"])
    assert balance_of(w3, token, recipient) == 12_500_000

    os.killpg(stack.process.pid, signal.SIGINT)  # Ctrl-C in the terminal running `make up`
    try:
        code = stack.process.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the stack did not stop within 20s of Ctrl-C; output:\n{stack.output}")
    # make reports the interrupt itself (it re-raises SIGINT); the stack below it stopped
    # cleanly, which its last line says.
    assert code in (0, -signal.SIGINT, 130), stack.output
    for name, port in ports.items():
        assert not port_open(port), f"{name} {port} still open after the stack stopped"
    assert "stack stopped" in stack.output


def test_taken_port_is_reported_with_the_variable_to_set(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    env = stack_env(tmp_path / "var", redis_url, redis_prefix)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["STACK_HTTP_PORT"] = str(port)
        run = launch([sys.executable, "-m", "devstack"], env, tmp_path / "var")
        try:
            code = run.process.wait(60)
        finally:
            stop(run)
    time.sleep(0.2)
    assert code == 1, run.output
    assert f"port {port} (gateway REST) is taken" in run.output
    assert "set STACK_HTTP_PORT" in run.output
    assert not port_open(int(env["STACK_ANVIL_PORT"])), "anvil was started anyway"


def test_make_up_target_runs_the_stack_module() -> None:
    """`make up` = deps, then `$(PY) -m devstack` (dry run: nothing executes)."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "up"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == ".venv/bin/python -m devstack"


def _up(env: dict[str, str], var_dir: Path) -> StackRun:
    run = launch([sys.executable, "-m", "devstack"], env, var_dir)
    run.wait_for("stack is up", timeout=120)
    return run


def _interrupt(run: StackRun) -> None:
    run.process.send_signal(signal.SIGINT)
    try:
        assert run.process.wait(20) == 0, run.output
    except subprocess.TimeoutExpired:
        pytest.fail(f"the stack did not stop within 20s of SIGINT; output:\n{run.output}")


def test_with_database_url_nothing_is_dropped_between_runs(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    from tests.support.databases import mariadb_database

    var_dir = tmp_path / "var"
    with mariadb_database(migrate=False) as url:
        env = stack_env(var_dir, redis_url, redis_prefix)
        env["DATABASE_URL"] = url
        first = _up(env, var_dir)
        try:
            assert "from DATABASE_URL (migrating only; nothing is dropped)" in first.output
            created = run_curl(first, first.line_starting("curl -sS -X POST "))
            get = first.line_starting("curl -sS ").replace("<id>", created["name"].split("/")[1])
            deadline = time.monotonic() + 90
            while run_curl(first, get)["state"] not in TERMINAL and time.monotonic() < deadline:
                time.sleep(1)
            assert run_curl(first, get)["state"] == "STATE_COMPLETED", first.output
            _interrupt(first)
        finally:
            stop(first)
        key = json.loads((var_dir / "stack.json").read_text())["api_key"]

        second = _up(env, var_dir)  # a new chain, the same database
        try:
            assert "reused its API key" in second.output
            assert json.loads((var_dir / "stack.json").read_text())["api_key"] == key
            again = run_curl(second, get)  # same ports as the first run
            assert again["state"] == "STATE_COMPLETED"
            assert not (var_dir / "withdrawals.sqlite3").exists()
            _interrupt(second)
        finally:
            stop(second)
