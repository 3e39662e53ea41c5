"""The committed contract artifacts are exactly what scripts/compile_contracts.mjs produces."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "compile_contracts.mjs"
BUILD_DIR = REPO_ROOT / "contracts" / "build"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / "solc").is_dir():
        pytest.fail("node and the npm tools are needed to compile contracts: run `make deps`")
    return node


def _compile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_node(), str(SCRIPT), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compiling_reproduces_the_committed_artifacts_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "build"
    result = _compile("--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    committed = sorted(p.name for p in BUILD_DIR.glob("*.json"))
    produced = sorted(p.name for p in out.glob("*.json"))
    assert produced == committed
    for name in committed:
        assert (out / name).read_bytes() == (BUILD_DIR / name).read_bytes(), name

    again = _compile("--out-dir", str(out))
    assert again.returncode == 0, again.stderr
    for name in committed:
        assert (out / name).read_bytes() == (BUILD_DIR / name).read_bytes(), name


def test_check_mode_passes_on_the_committed_tree_and_catches_drift(tmp_path: Path) -> None:
    result = _compile("--check")
    assert result.returncode == 0, result.stderr

    drifted = tmp_path / "build"
    shutil.copytree(BUILD_DIR, drifted)
    (drifted / "TestStablecoin.json").write_text("{}\n")
    (drifted / "Removed.json").write_text("{}\n")
    result = _compile("--check", "--out-dir", str(drifted))
    assert result.returncode == 1
    assert "differs" in result.stderr
    assert "stale" in result.stderr
    assert (drifted / "Removed.json").exists(), "--check must not write"


def test_artifact_shape_and_pinned_settings() -> None:
    artifact = json.loads((BUILD_DIR / "TestStablecoin.json").read_text())
    assert artifact["contractName"] == "TestStablecoin"
    assert artifact["sourceName"] == "contracts/TestStablecoin.sol"
    assert artifact["compiler"]["version"].startswith("0.8.37+")
    assert artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    assert artifact["bytecode"].startswith("0x6080")
    assert artifact["deployedBytecode"].startswith("0x6080")
    names = {item.get("name") for item in artifact["abi"]}
    assert {"mint", "pause", "unpause", "paused", "decimals", "owner", "EnforcedPause"} <= names
    text = (BUILD_DIR / "TestStablecoin.json").read_text()
    assert text == json.dumps(artifact, indent=2, sort_keys=True) + "\n"
