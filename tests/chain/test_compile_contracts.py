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
    committed = sorted(str(p.relative_to(BUILD_DIR)) for p in BUILD_DIR.rglob("*.json"))
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*.json"))
    assert produced == committed
    assert {"PayoutVault.json", "test/BlacklistToken.json", "test/FalseReturningToken.json"} <= set(
        committed
    )
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
    (drifted / "test" / "BlacklistToken.json").write_text("{}\n")
    (drifted / "test" / "RemovedToken.json").write_text("{}\n")
    (drifted / "test" / "FalseReturningToken.json").unlink()
    result = _compile("--check", "--out-dir", str(drifted))
    assert result.returncode == 1
    assert "differs" in result.stderr
    assert "stale" in result.stderr
    for name in ("TestStablecoin.json", "Removed.json", "BlacklistToken.json", "RemovedToken.json"):
        assert name in result.stderr
    assert f"missing: {drifted / 'test' / 'FalseReturningToken.json'}" in result.stderr
    assert (drifted / "Removed.json").exists(), "--check must not write"
    assert (drifted / "test" / "RemovedToken.json").exists(), "--check must not write"

    # Writing removes stale artifacts in both directories and restores the rest.
    result = _compile("--out-dir", str(drifted))
    assert result.returncode == 0, result.stderr
    assert not (drifted / "Removed.json").exists()
    assert not (drifted / "test" / "RemovedToken.json").exists()
    assert _compile("--check", "--out-dir", str(drifted)).returncode == 0


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


def test_payout_vault_and_test_tokens_are_built_from_their_directories() -> None:
    for relative, source in (
        ("PayoutVault.json", "contracts/PayoutVault.sol"),
        ("test/BlacklistToken.json", "contracts/test/BlacklistToken.sol"),
        ("test/FalseReturningToken.json", "contracts/test/FalseReturningToken.sol"),
    ):
        artifact = json.loads((BUILD_DIR / relative).read_text())
        assert artifact["sourceName"] == source
        assert (
            artifact["settings"]
            == json.loads((BUILD_DIR / "TestStablecoin.json").read_text())["settings"]
        )
    names = {
        item.get("name") for item in json.loads((BUILD_DIR / "PayoutVault.json").read_text())["abi"]
    }
    assert {"payout", "isPaid", "setOperator", "setOutflowCap", "sweep", "PayoutExecuted"} <= names
