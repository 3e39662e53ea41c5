"""Endpoint signing secrets: made here, stored encrypted (AES-256-GCM), read back to sign.

A secret is `whsec_` + base64 of 32 random bytes, the form the Standard Webhooks libraries
take. It is stored as `v1.` + base64(nonce || ciphertext+tag) under a 256-bit key: the
`WEBHOOKS_ENCRYPTION_KEY` variable (base64 of 32 bytes) when set, else the key file
`WEBHOOKS_ENCRYPTION_KEY_FILE` (default `<AWS_VAR_DIR>/webhooks/encryption.key`), generated
with mode 0600 when missing. The gateway and the sender must use the same key. The key is
read when the cipher is opened, never kept in a settings object, never logged.
"""

from __future__ import annotations

import base64
import os
import secrets as random
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.settings import VAR_DIR

ENV_KEY = "WEBHOOKS_ENCRYPTION_KEY"
ENV_KEY_FILE = "WEBHOOKS_ENCRYPTION_KEY_FILE"
DEFAULT_KEY_FILE = VAR_DIR / "webhooks" / "encryption.key"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the form of a secret, not one
_VERSION = "v1."
_AAD = b"assetwithdrawal webhook secret"


class SecretKeyError(WithdrawalSystemError):
    """The encryption key cannot be read or is malformed; the message names the setting."""


def new_secret() -> str:
    """A new signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(32)).decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SecretKeyError(f"{where} is not base64 of 32 bytes") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where} must hold 32 bytes (base64), not {len(key)}")
    return key


def load_key() -> bytes:
    """The 32-byte key: from WEBHOOKS_ENCRYPTION_KEY, else the key file (created if missing)."""
    given = os.environ.get(ENV_KEY)
    if given:
        return _decode_key(given, ENV_KEY)
    path = Path(os.environ.get(ENV_KEY_FILE) or DEFAULT_KEY_FILE)
    try:
        return _decode_key(path.read_text(), f"{ENV_KEY_FILE} ({path})")
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(random.token_bytes(32)).decode() + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _decode_key(path.read_text(), f"{ENV_KEY_FILE} ({path})")
    with os.fdopen(fd, "w") as handle:
        handle.write(encoded)
    return _decode_key(encoded, str(path))


class SecretBox:
    """Encrypts and decrypts endpoint secrets with one key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key if key is not None else load_key())

    def seal(self, secret: str) -> str:
        nonce = random.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), _AAD)
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(_VERSION):
            raise SecretKeyError("a stored webhook secret has an unknown format")
        raw = base64.b64decode(stored[len(_VERSION) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode()
        except Exception:
            raise SecretKeyError(
                "a stored webhook secret does not decrypt: the gateway and the webhook sender "
                f"must use the same {ENV_KEY} or {ENV_KEY_FILE}"
            ) from None
