"""withdrawal_shared.startup: web3 imported without py_ecc's BLS code, which still works when
used (in a fresh interpreter each: this test process may have imported web3 already)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from withdrawal_shared.startup import defer_bls
deferred = {defer}
if deferred:
    assert defer_bls()
    assert "web3" in sys.modules
    assert "py_ecc.bls" not in sys.modules
    assert "py_ecc.optimized_bls12_381.optimized_pairing" not in sys.modules
    assert not defer_bls()  # web3 is there already: nothing to do
import web3  # noqa: F401
from eth_keyfile import create_keyfile_json
key = bytes(range(1, 33))
print(create_keyfile_json(key, b"pw", version=4, kdf="pbkdf2", iterations=2)["pubkey"])
if deferred:
    import py_ecc.bls
    assert type(py_ecc.bls.G2ProofOfPossession).__name__ != "_Deferred"
"""


def _run(defer: bool, repo_root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(defer=defer)],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_web3_imports_without_bls_and_the_deferred_name_still_works(repo_root: Path) -> None:
    deferred = _run(True, repo_root)
    assert len(deferred.removeprefix("0x")) == 96  # a BLS12-381 public key, hex
    assert deferred == _run(False, repo_root)


def test_services_defer_bls_before_importing_web3(repo_root: Path) -> None:
    for service in ("svc_processor", "svc_monitor", "svc_signer"):
        main = (repo_root / service / "__main__.py").read_text()
        assert main.index("defer_bls()") < main.index(f"from {service}.server import")
