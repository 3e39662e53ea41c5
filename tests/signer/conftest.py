"""Fixtures for the signer's tests: a private SoftHSM2 token, a keystore, anvil, and a real
SignerServer (keystore or PKCS#11 backend) over the suite's databases (`db_url`); and one
SoftHSM2 token per owner of the treasury Safe (`owner_tokens`).

The SoftHSM2 tokens are provisioned under the session's tmp dir (never a system token); when
SoftHSM2 is not installed the fixture fails (not skips) and says to run `make softhsm`.
SoftHSM2 lists the tokens of its directory when the module is first initialised in a process,
so the owners' tokens are initialised (by `softhsm2-util`, another process) together with the
hot wallet's, before any key is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.config import free_port
from svc_signer.keys.keystore import KeystoreBackend, create_keystore
from svc_signer.keys.pkcs11_hsm import Pkcs11Backend, find_pkcs11_library
from svc_signer.keys.softhsm import (
    SOFTHSM2_CONF_ENV,
    SoftHsmToken,
    provision_softhsm,
    softhsm2_util,
    write_softhsm_conf,
)
from svc_signer.settings import SignerSettings
from tests.signer.support import RunningSigner, SignerWorld

REPO = Path(__file__).resolve().parents[2]
ANVIL = REPO / "node_modules" / ".bin" / "anvil"
TEST_PIN = "user-pin-for-tests"
TEST_SO_PIN = "so-pin-for-tests"
OWNER_TOKENS = ("safe-owner-0", "safe-owner-1", "safe-owner-2")
"""One SoftHSM2 token per owner of the treasury Safe (each owner's key in its own token)."""


@pytest.fixture(scope="session")
def softhsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test run's SoftHSM2 directory, with the owners' tokens initialised (no keys yet)."""
    if shutil.which("softhsm2-util") is None:
        pytest.fail("SoftHSM2 is not installed (softhsm2-util not found): run `make softhsm`")
    try:
        find_pkcs11_library()
    except Exception as exc:
        pytest.fail(f"{exc}")
    base = tmp_path_factory.mktemp("softhsm")
    conf = write_softhsm_conf(base)
    env = {**os.environ, SOFTHSM2_CONF_ENV: str(conf)}
    for label in OWNER_TOKENS:
        subprocess.run(
            [
                softhsm2_util(),
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                TEST_PIN,
                "--so-pin",
                TEST_SO_PIN,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    return base


@pytest.fixture(scope="session")
def softhsm_token(softhsm_dir: Path) -> SoftHsmToken:
    """A SoftHSM2 token with a secp256k1 key, in this test session's own directory."""
    return provision_softhsm(
        softhsm_dir,
        token_label="signer-tests",
        key_label="hot-wallet-test",
        pin=TEST_PIN,
        so_pin=TEST_SO_PIN,
    )


@pytest.fixture(scope="session")
def owner_tokens(softhsm_dir: Path, softhsm_token: SoftHsmToken) -> list[SoftHsmToken]:
    """The three owners' tokens of the treasury Safe, each with its own secp256k1 key."""
    return [
        provision_softhsm(
            softhsm_dir, token_label=label, key_label="safe-owner", pin=TEST_PIN, so_pin=TEST_SO_PIN
        )
        for label in OWNER_TOKENS
    ]


@pytest.fixture(scope="session")
def owner_backends(owner_tokens: list[SoftHsmToken]) -> Iterator[list[Pkcs11Backend]]:
    """An open PKCS#11 backend per owner token (one key each)."""
    backends = [Pkcs11Backend.open(token.settings) for token in owner_tokens]
    yield backends
    for backend in backends:
        backend.close()


@pytest.fixture(scope="session")
def hsm_backend(softhsm_token: SoftHsmToken) -> Iterator[Pkcs11Backend]:
    with Pkcs11Backend.open(softhsm_token.settings) as backend:
        yield backend


@pytest.fixture(scope="session")
def keystore_backend(tmp_path_factory: pytest.TempPathFactory) -> KeystoreBackend:
    path = tmp_path_factory.mktemp("keystore") / "keystore.json"
    # pbkdf2 with few iterations keeps the suite fast; the round-trip test uses the default.
    create_keystore(path, "fixture-password", kdf="pbkdf2", iterations=2)
    return KeystoreBackend.load(path, "fixture-password")


@pytest.fixture(params=["keystore", "pkcs11"])
def backend(request: pytest.FixtureRequest) -> KeystoreBackend | Pkcs11Backend:
    """Each key backend in turn (only the pkcs11 one needs SoftHSM2)."""
    name = "keystore_backend" if request.param == "keystore" else "hsm_backend"
    chosen: KeystoreBackend | Pkcs11Backend = request.getfixturevalue(name)
    return chosen


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil (chain id 137, auto-mining) on a free 127.0.0.1 port; killed afterwards."""
    if not ANVIL.exists():
        pytest.fail(f"anvil not found at {ANVIL}: run `make deps`")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "137", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the npm shim and the real binary
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"anvil did not start on port {port}: {err[:500]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def signer(db_url: str, keystore_backend: KeystoreBackend) -> Iterator[RunningSigner]:
    """The real SignerServer (keystore backend) on a free port, over the module's database."""
    settings = SignerSettings(database_url=db_url, grpc_port=0, shutdown_grace_seconds=1.0)
    running = RunningSigner(settings, keystore_backend)
    yield running
    running.close()


@pytest.fixture(scope="module")
def world(signer: RunningSigner) -> SignerWorld:
    """A token, the hot wallet row (the keystore key's address) and builders for requests."""
    return SignerWorld(signer.sessions, signer.server.backend.address)


@pytest.fixture(scope="module")
def hsm_signer(
    db_url: str, softhsm_token: SoftHsmToken, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSigner]:
    """A SignerServer that opens the SoftHSM2 key itself from its settings (PIN from a file)."""
    pin_file = tmp_path_factory.mktemp("pin") / "user.pin"
    pin_file.write_text(softhsm_token.settings.pin, encoding="utf-8")
    settings = SignerSettings(
        database_url=db_url,
        grpc_port=0,
        shutdown_grace_seconds=1.0,
        key_backend="pkcs11",
        pkcs11_library=softhsm_token.settings.library_path or "",
        pkcs11_token_label=softhsm_token.settings.token_label,
        pkcs11_key_label=softhsm_token.settings.key_label,
        pkcs11_pin_file=str(pin_file),
    )
    running = RunningSigner(settings)
    yield running
    running.close()
