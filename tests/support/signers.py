"""Signers for tests: a real SignerServer in this process, its keys in keystore files."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from svc_signer.keys.keystore import KeystoreBackend, keystore_paths
from svc_signer.server import SignerServer
from svc_signer.settings import ROLE_HOT, SignerSettings
from tests.support.services import ThreadedServer


@contextlib.contextmanager
def keystore_signer(
    database_url: str,
    directory: Path,
    keys: int = 1,
    *,
    role: str = ROLE_HOT,
    owns_keys: bool = False,
) -> Iterator[str]:
    """A SignerServer in this process holding `keys` keystore keys (laid out as
    SIGNER_KEYSTORE_COUNT does) in `role` (`safe_owner`: one treasury Safe owner key);
    yields its gRPC target. With `owns_keys` it opens them from its settings itself (its
    password in a file), so CreateWallet can create new ones."""
    backends = [
        KeystoreBackend.load_or_create(path, "e2e-password", kdf="pbkdf2", iterations=2)
        for path in keystore_paths(directory / "keystore.json", keys)
    ]
    settings = SignerSettings(
        database_url=database_url, grpc_port=0, shutdown_grace_seconds=1.0, role=role
    )
    if owns_keys:
        password = directory / "keystore.password"
        password.write_text("e2e-password", encoding="utf-8")
        settings = dataclasses.replace(
            settings,
            keystore_path=str(directory / "keystore.json"),
            keystore_count=keys,
            keystore_password_file=str(password),
        )
    signer = ThreadedServer(SignerServer(settings, None if owns_keys else backends))
    try:
        yield f"127.0.0.1:{signer.server.grpc_port}"  # type: ignore[attr-defined]
    finally:
        signer.close()
