"""`make help` lists every target that has a `## description` in the Makefile, grouped."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DESCRIBED = re.compile(r"^([A-Za-z0-9_.-]+):.*?## (.+)$")
HEADINGS = ("run", "test", "bench", "chaos", "gen/build", "housekeeping")


def described_targets() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        match = DESCRIBED.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def make_help() -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_help_lists_every_described_target_under_a_heading() -> None:
    targets = described_targets()
    assert {"up", "test", "bench-e2e", "bench-gas", "chaos-short"} <= set(targets)
    listed: dict[str, str] = {}
    group_of: dict[str, str] = {}
    groups: list[str] = []
    for line in make_help().splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            groups.append(line)
            continue
        name, _, description = line.strip().partition(" ")
        listed[name] = description.strip()
        assert groups, f"{name} is listed before any heading"
        group_of[name] = groups[-1]
    assert set(listed) == set(targets), (
        f"missing from make help: {sorted(set(targets) - set(listed))}; "
        f"listed without a description: {sorted(set(listed) - set(targets))}"
    )
    assert listed == targets
    assert tuple(groups) == HEADINGS
    assert group_of["up"] == "run"
    assert group_of["bench-e2e"] == "bench"
    assert group_of["chaos-short"] == "chaos"


def test_plain_make_prints_the_help() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("awk "), done.stdout
