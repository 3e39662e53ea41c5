"""The signer's key backends: one `KeyBackend` interface, three implementations.

- `KeystoreBackend` (keystore.py): an encrypted keystore file, the development default.
- `Pkcs11Backend` (pkcs11_hsm.py): a non-extractable secp256k1 key inside a PKCS#11 token
  (SoftHSM2 locally; `softhsm.provision_softhsm` sets one up).
- `AwsKmsBackend` (aws_kms.py): a secp256k1 key in AWS KMS, signing with `kms:Sign` (imported
  only when selected: boto3 is slow to import).

A backend holds one key (one hot wallet). The signer may hold several hot wallets, each with
its own key and nonce sequence: `backends_from_env()` opens all of them from `SIGNER_KEY_BACKEND`
(`keystore`, the default, `pkcs11` or `aws_kms`), and `KeyRing` (ring.py) finds a wallet's
backend by its address. `backend_from_env()` opens only the first. Keys never leave these
backends: callers get addresses and signatures only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from svc_signer.keys.backend import KeyBackend, KeyBackendError, Signature
from svc_signer.keys.keystore import KeystoreBackend, KeystoreError
from svc_signer.keys.pkcs11_hsm import Pkcs11Backend, Pkcs11Error, Pkcs11Settings
from svc_signer.keys.ring import KeyRing, close_backends

ENV_BACKEND = "SIGNER_KEY_BACKEND"
ENV_KEYSTORE_PATH = "SIGNER_KEYSTORE_PATH"
ENV_KEYSTORE_PASSWORD_FILE = "SIGNER_KEYSTORE_PASSWORD_FILE"  # noqa: S105 - a name
ENV_KEYSTORE_COUNT = "SIGNER_KEYSTORE_COUNT"

__all__ = [
    "KeyBackend",
    "KeyBackendError",
    "KeyRing",
    "KeystoreBackend",
    "KeystoreError",
    "Pkcs11Backend",
    "Pkcs11Error",
    "Pkcs11Settings",
    "Signature",
    "backend_from_env",
    "backends_from_env",
    "keystore_count",
]


def keystore_count(environ: Mapping[str, str]) -> int:
    """`SIGNER_KEYSTORE_COUNT` (default 1): how many keystore keys (hot wallets) to hold."""
    raw = (environ.get(ENV_KEYSTORE_COUNT, "") or "1").strip()
    try:
        count = int(raw)
    except ValueError:
        raise KeyBackendError(f"{ENV_KEYSTORE_COUNT}={raw!r} is not an integer") from None
    if count < 1:
        raise KeyBackendError(f"{ENV_KEYSTORE_COUNT}={count} is below its minimum 1")
    return count


def backends_from_env(environ: Mapping[str, str] | None = None) -> list[KeyBackend]:
    """Every key backend (one per hot wallet) the environment selects, in order.

    `SIGNER_KEY_BACKEND=keystore` (default): `SIGNER_KEYSTORE_COUNT` (default 1) keystores,
    `SIGNER_KEYSTORE_PATH` (default `var/signer/keystore.json`) for the first and
    `<stem>-<i>.json` beside it for the i-th (i >= 1), each created when missing, all with the
    one password from `SIGNER_KEYSTORE_PASSWORD` or `SIGNER_KEYSTORE_PASSWORD_FILE` (default
    `var/signer/keystore.password`, generated when missing).
    `SIGNER_KEY_BACKEND=pkcs11`: one key pair per label of `SIGNER_PKCS11_KEY_LABELS`
    (comma-separated; default the one `SIGNER_PKCS11_KEY_LABEL`), all on the same token; see
    `Pkcs11Settings.from_env`.
    `SIGNER_KEY_BACKEND=aws_kms`: one KMS key per entry of `SIGNER_KMS_KEY_IDS`
    (comma-separated), all through one shared boto3 client; see `AwsKmsSettings.from_env`.
    """
    from svc_signer.keys import keystore

    env = os.environ if environ is None else environ
    kind = (env.get(ENV_BACKEND, "") or "keystore").strip().lower()
    opened: list[KeyBackend] = []
    try:
        if kind == "keystore":
            count = keystore_count(env)
            password_file = Path(
                env.get(ENV_KEYSTORE_PASSWORD_FILE, "") or keystore.DEFAULT_PASSWORD_FILE
            )
            password = keystore.resolve_password(password_file=password_file, environ=env)
            path = Path(env.get(ENV_KEYSTORE_PATH, "") or keystore.DEFAULT_KEYSTORE_PATH)
            for each in keystore.keystore_paths(path, count):
                opened.append(KeystoreBackend.load_or_create(each, password))
        elif kind == "pkcs11":
            settings = Pkcs11Settings.from_env(env)
            for label in settings.labels:
                opened.append(Pkcs11Backend.open(replace(settings, key_label=label)))
        elif kind == "aws_kms":
            from svc_signer.keys import aws_kms

            kms = aws_kms.AwsKmsSettings.from_env(env)
            client = aws_kms.kms_client(kms.region, kms.endpoint_url)
            for key_id in kms.key_ids:
                opened.append(aws_kms.AwsKmsBackend.open(client, key_id))
        else:
            raise KeyBackendError(
                f"{ENV_BACKEND}={kind!r} is not a key backend: use keystore, pkcs11 or aws_kms"
            )
    except BaseException:
        close_backends(opened)
        raise
    return opened


def backend_from_env(environ: Mapping[str, str] | None = None) -> KeyBackend:
    """The first key backend the environment selects (see `backends_from_env`); with one
    hot wallet configured (the default) the only one."""
    env = dict(os.environ if environ is None else environ)
    env[ENV_KEYSTORE_COUNT] = "1"
    backends = backends_from_env(env)
    close_backends(backends[1:])
    return backends[0]
