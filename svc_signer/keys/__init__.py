"""The signer's key backends: one `KeyBackend` interface, two implementations.

- `KeystoreBackend` (keystore.py): an encrypted keystore file, the development default.
- `Pkcs11Backend` (pkcs11_hsm.py): a non-extractable secp256k1 key inside a PKCS#11 token
  (SoftHSM2 locally; `softhsm.provision_softhsm` sets one up).

`backend_from_env()` picks one from `SIGNER_KEY_BACKEND` (`keystore`, the default, or
`pkcs11`). Keys never leave these backends: callers get an address and signatures only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from svc_signer.keys.backend import KeyBackend, KeyBackendError, Signature
from svc_signer.keys.keystore import KeystoreBackend, KeystoreError
from svc_signer.keys.pkcs11_hsm import Pkcs11Backend, Pkcs11Error, Pkcs11Settings

ENV_BACKEND = "SIGNER_KEY_BACKEND"
ENV_KEYSTORE_PATH = "SIGNER_KEYSTORE_PATH"
ENV_KEYSTORE_PASSWORD_FILE = "SIGNER_KEYSTORE_PASSWORD_FILE"  # noqa: S105 - a name

__all__ = [
    "KeyBackend",
    "KeyBackendError",
    "KeystoreBackend",
    "KeystoreError",
    "Pkcs11Backend",
    "Pkcs11Error",
    "Pkcs11Settings",
    "Signature",
    "backend_from_env",
]


def backend_from_env(environ: Mapping[str, str] | None = None) -> KeyBackend:
    """The key backend the environment selects.

    `SIGNER_KEY_BACKEND=keystore` (default): `SIGNER_KEYSTORE_PATH` (default
    `var/signer/keystore.json`, created when missing), password from
    `SIGNER_KEYSTORE_PASSWORD` or `SIGNER_KEYSTORE_PASSWORD_FILE` (default
    `var/signer/keystore.password`, generated when missing).
    `SIGNER_KEY_BACKEND=pkcs11`: see `Pkcs11Settings.from_env`.
    """
    from svc_signer.keys import keystore

    env = os.environ if environ is None else environ
    kind = (env.get(ENV_BACKEND, "") or "keystore").strip().lower()
    if kind == "keystore":
        password_file = Path(
            env.get(ENV_KEYSTORE_PASSWORD_FILE, "") or keystore.DEFAULT_PASSWORD_FILE
        )
        password = keystore.resolve_password(password_file=password_file, environ=env)
        path = Path(env.get(ENV_KEYSTORE_PATH, "") or keystore.DEFAULT_KEYSTORE_PATH)
        return KeystoreBackend.load_or_create(path, password)
    if kind == "pkcs11":
        return Pkcs11Backend.open(Pkcs11Settings.from_env(env))
    raise KeyBackendError(f"{ENV_BACKEND}={kind!r} is not a key backend: use keystore or pkcs11")
