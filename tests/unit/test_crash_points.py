"""The crash-point registry (`withdrawal_shared.crash_points`): names are checked, an armed
point SIGKILLs its process once per marker directory, and every registered point is called
exactly once in the services (and nothing else is)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.harness import SERVICES
from withdrawal_shared.crash_points import (
    CRASH_POINTS,
    ENV_AT,
    ENV_ONCE_DIR,
    CrashPointError,
    claim,
    crash_point,
    parse_armed,
    service_of,
)

REPO = Path(__file__).resolve().parents[2]
CALL = re.compile(r"""crash_point\(\s*["']([^"']+)["']""")


def test_every_name_belongs_to_a_service_and_says_what_is_true() -> None:
    for name, description in CRASH_POINTS.items():
        assert service_of(name) in SERVICES, name
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", name), name
        assert description.strip(), name


def test_calling_an_unregistered_point_is_an_error() -> None:
    with pytest.raises(CrashPointError, match="not a registered crash point"):
        crash_point("processor.after_lunch")


def test_an_unarmed_point_does_nothing() -> None:
    for name in CRASH_POINTS:
        crash_point(name)  # this test process has no AWS_CRASH_AT: it survives


def test_parse_armed() -> None:
    assert parse_armed({}) == frozenset()
    assert parse_armed({ENV_AT: " "}) == frozenset()
    both = "processor.after_nonce_reserved, monitor.mid_state_update"
    assert parse_armed({ENV_AT: both, ENV_ONCE_DIR: "/tmp/x"}) == {
        "processor.after_nonce_reserved",
        "monitor.mid_state_update",
    }
    with pytest.raises(CrashPointError, match=r"processor\.after_nonce_reservd"):
        parse_armed({ENV_AT: "processor.after_nonce_reservd", ENV_ONCE_DIR: "/tmp/x"})
    with pytest.raises(CrashPointError, match=ENV_ONCE_DIR):
        parse_armed({ENV_AT: "processor.after_nonce_reserved"})


def test_claim_is_once_per_directory(tmp_path: Path) -> None:
    once = tmp_path / "once"
    assert claim(once, "monitor.mid_state_update")
    assert not claim(once, "monitor.mid_state_update")
    assert (once / "monitor.mid_state_update").read_text() == f"{os.getpid()}\n"


def _run(
    point: str, once_dir: Path, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_AT: crash_at or point, ENV_ONCE_DIR: str(once_dir)}
    code = (
        "import atexit\n"
        "from withdrawal_shared.crash_points import crash_point\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        f"crash_point({point!r})\n"
        "print('went past')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_armed_point_kills_its_process_once(tmp_path: Path) -> None:
    point = "signer.after_ledger_before_reply"
    first = _run(point, tmp_path)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert first.stdout == ""  # no cleanup of any kind: not even atexit
    assert (tmp_path / point).is_file()
    again = _run(point, tmp_path)  # the supervisor's restart, same environment
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["went", "past", "atexit", "ran"]


def test_a_typo_in_the_environment_fails_at_import(tmp_path: Path) -> None:
    result = _run("monitor.mid_state_update", tmp_path, crash_at="monitor.mid_state_updat")
    assert result.returncode == 1
    assert "CrashPointError" in result.stderr
    assert "monitor.mid_state_updat" in result.stderr
    assert not list(tmp_path.iterdir())


def test_every_registered_point_is_called_once_in_the_services() -> None:
    calls: list[str] = []
    for package in ("svc_gateway", "svc_processor", "svc_signer", "svc_monitor"):
        for path in sorted((REPO / package).rglob("*.py")):
            found = CALL.findall(path.read_text(encoding="utf-8"))
            calls.extend(found)
            for name in found:
                assert service_of(name) == package.removeprefix("svc_"), (name, path)
    assert sorted(calls) == sorted(CRASH_POINTS)
