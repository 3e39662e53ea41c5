"""The stack's supervisor and helpers, with dummy children (no services, no chain)."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from devstack.config import StackConfig, check_ports
from devstack.redis_server import ping, start_redis_server
from devstack.runner import curl_commands, redact_url, write_private_json
from devstack.supervisor import ChildSpec, Supervisor, backoff_delays
from withdrawal_shared.runtime import pid_alive
from withdrawal_shared.settings import SettingsError


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_backoff_starts_at_one_second_doubles_and_caps_at_thirty() -> None:
    assert list(itertools.islice(backoff_delays(), 8)) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_crashing_child_is_restarted_with_growing_backoff_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    sup = Supervisor(out, color=False, backoff_initial=0.1, backoff_max=0.4, stop_grace=2)
    child = sup.start(
        ChildSpec("dummy", python("import sys; sys.exit(3)"), log_path=tmp_path / "dummy.log")
    )
    stop = threading.Event()
    runner = threading.Thread(target=sup.run, args=(stop, 0.01))
    runner.start()
    try:
        wait_until(lambda: child.restarts >= 4, timeout=15)
    finally:
        stop.set()
        runner.join(5)
    codes = sup.stop_all()
    text = out.getvalue()
    # 0.1, 0.2, 0.4, then capped at 0.4: each exit is logged with the delay before the restart.
    delays = [
        line.split("restarting it in ")[1].split("s ")[0]
        for line in text.splitlines()
        if "exited unexpectedly with code 3" in line
    ]
    assert delays[:4] == ["0.1", "0.2", "0.4", "0.4"], text
    assert "stack    | restarting dummy (restart #1)" in text
    assert codes["dummy"] in {3, -15}  # exited on its own, or stopped while just restarted
    assert child.process is not None and not pid_alive(child.process.pid)
    # After stop_all nothing restarts any more.
    restarts = child.restarts
    sup.poll()
    time.sleep(0.5)
    sup.poll()
    assert child.restarts == restarts


def test_output_is_prefixed_logged_and_children_are_stopped(tmp_path: Path) -> None:
    out = io.StringIO()
    sup = Supervisor(out, color=False, stop_grace=1.0)
    polite = sup.start(
        ChildSpec(
            "polite",
            python("import time; print('hello', flush=True); time.sleep(60)"),
            log_path=tmp_path / "polite.log",
        )
    )
    stubborn = sup.start(
        ChildSpec(
            "processor",
            python(
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)"
            ),
        )
    )
    wait_until(lambda: "hello" in out.getvalue() and "ready" in out.getvalue())
    started = time.monotonic()
    codes = sup.stop_all()
    assert time.monotonic() - started < 5
    assert codes == {"polite": -15, "processor": -9}
    text = out.getvalue()
    assert "polite   | hello" in text
    assert "processor| ready" in text
    assert "processor did not stop within 1s of SIGTERM: killing it" in text
    assert (tmp_path / "polite.log").read_text() == "hello\n"
    for child in (polite, stubborn):
        assert child.process is not None and not pid_alive(child.process.pid)


def test_colour_only_when_asked() -> None:
    out = io.StringIO()
    Supervisor(out, color=True).say("hi")
    assert out.getvalue() == "\x1b[1mstack    |\x1b[0m hi\n"
    assert Supervisor(io.StringIO()).color is False  # not a terminal


def test_own_redis_server_starts_and_stops(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `sudo apt-get install redis-server`")
    handle = start_redis_server(tmp_path / "redis.log")
    try:
        assert handle.source == "own"
        assert ping(handle.url)
        process = handle.process
        assert process is not None
    finally:
        handle.stop()
    assert process.poll() is not None
    assert not ping(handle.url, timeout=0.3)


def test_taken_and_duplicate_ports_name_the_variable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = StackConfig(var_dir=tmp_path, http_port=port, monitor_port=port)
        problems = check_ports(config)
    assert any(
        f"port {port} (gateway REST) is taken" in p and "STACK_HTTP_PORT" in p for p in problems
    )
    assert any("both configured on port" in p and "STACK_MONITOR_PORT" in p for p in problems)


FAKE_CURL = """#!/bin/sh
exec python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"
"""


def run_printed(lines: list[str], fake_bin: Path) -> list[str]:
    """Run the printed lines in bash as pasted, with a `curl` that prints its arguments."""
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "\n".join(lines)],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    argv: list[str] = json.loads(done.stdout)
    return argv


def test_printed_curls_read_the_key_from_stack_json_and_need_no_extra_tool(
    tmp_path: Path,
) -> None:
    stack_json = tmp_path / "var dir" / "stack.json"  # a space, to check the quoting
    write_private_json(stack_json, {"api_key": "awk_0123abcd_secret"})
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "curl").write_text(FAKE_CURL)
    (fake_bin / "curl").chmod(0o755)

    curls = curl_commands("http://127.0.0.1:8080", stack_json)
    printed = "\n".join([curls.key, curls.create, curls.get])
    assert "awk_0123abcd_secret" not in printed
    assert "uuidgen" not in printed and "jq" not in printed
    assert curls.key.startswith("KEY=$(") and curls.create.startswith("curl -sS -X POST ")

    first = run_printed([curls.key, curls.create], fake_bin)
    again = run_printed([curls.key, curls.create], fake_bin)
    assert first[:5] == ["-sS", "-X", "POST", "http://127.0.0.1:8080/v1/withdrawals", "-H"]
    assert "Authorization: Bearer awk_0123abcd_secret" in first
    (request_id,) = [a.removeprefix("Idempotency-Key: ") for a in first if "Idempotency" in a]
    assert str(uuid.UUID(request_id)) == request_id
    assert request_id not in again, "every paste must create a new withdrawal"
    assert "Content-Type: application/json" in first
    body = json.loads(first[first.index("-d") + 1])
    assert body["token"] == "USDC" and body["amount"] == "12.5"

    get = run_printed([curls.key, curls.get.replace("<id>", "01ABC")], fake_bin)
    assert get == [
        "-sS",
        "http://127.0.0.1:8080/v1/withdrawals/01ABC",
        "-H",
        "Authorization: Bearer awk_0123abcd_secret",
    ]


def test_curls_and_private_files(tmp_path: Path) -> None:
    curls = curl_commands("http://127.0.0.1:8080", tmp_path / "stack.json")
    assert "'http://127.0.0.1:8080/v1/withdrawals/<id>'" in curls.get

    path = tmp_path / "stack.json"
    write_private_json(path, {"api_key": "x"})
    write_private_json(path, {"api_key": "y"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"api_key": "y"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"], "a temporary file left"
    assert redact_url("mysql+pymysql://aws:secret@127.0.0.1/aws") == (
        "mysql+pymysql://aws:***@127.0.0.1/aws"
    )


def test_a_service_without_main_module_is_detected() -> None:
    from devstack.runner import Service

    assert Service("gateway", "svc_gateway", 1).exists()
    assert not Service("ghost", "svc_does_not_exist", 1).exists()
    assert not Service("ghost", "withdrawal_shared.settings", 1).exists()  # a module, no __main__


def test_stack_hot_wallets_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STACK_HOT_WALLETS (default 2) becomes the signer's SIGNER_KEYSTORE_COUNT."""
    monkeypatch.delenv("STACK_HOT_WALLETS", raising=False)
    assert StackConfig.from_env().hot_wallets == 2
    monkeypatch.setenv("STACK_HOT_WALLETS", "3")
    assert StackConfig.from_env().hot_wallets == 3
    monkeypatch.setenv("STACK_HOT_WALLETS", "0")
    with pytest.raises(SettingsError, match="STACK_HOT_WALLETS"):
        StackConfig.from_env()


def test_devstack_help_describes_the_stack_and_starts_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m devstack")
    assert "is what `make up` runs" in done.stdout
    assert "starting anvil" not in done.stdout
