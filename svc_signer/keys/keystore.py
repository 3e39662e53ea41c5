"""The encrypted keystore file backend, the development default for the signer.

The key lives in a standard Web3 Secret Storage file (eth-account `Account.encrypt`, scrypt by
default), and its password comes from an environment variable or, when that is unset, from a
password file under `var/` that is generated with `secrets` (mode 0600) the first time it is
needed. `var/` is gitignored: neither the keystore nor its password is ever committed.

- `resolve_password()`: the password from the env var, else the file (created when missing).
- `create_keystore()`: write a new keystore for a fresh key (refuses to overwrite).
- `keystore_paths()`: where the keystores of several hot wallets live (`<stem>-<i>.json`).
- `KeystoreBackend.load()`: decrypt a keystore into a `KeyBackend`;
  `KeystoreBackend.load_or_create()` does the same, creating the keystore when missing.

The decrypted key stays in this process's memory and is never logged, printed or returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import coincurve
from eth_account import Account

from svc_signer.keys.backend import (
    KeyBackendError,
    Signature,
    address_from_public_key,
    check_digest,
)
from withdrawal_shared.settings import VAR_DIR

PASSWORD_ENV = "SIGNER_KEYSTORE_PASSWORD"  # noqa: S105 - the variable's name
DEFAULT_KEYSTORE_PATH = VAR_DIR / "signer" / "keystore.json"
DEFAULT_PASSWORD_FILE = VAR_DIR / "signer" / "keystore.password"
_FILE_MODE = 0o600
Kdf = Literal["scrypt", "pbkdf2"]
_DIR_MODE = 0o700


class KeystoreError(KeyBackendError):
    """The keystore file is missing, unreadable, malformed or its password is wrong."""


def keystore_paths(path: Path, count: int) -> list[Path]:
    """The keystore files of `count` hot wallets: `path` itself for the first (index 0), and
    `<stem>-<i>.json` beside it for index i >= 1 (e.g. keystore.json, keystore-1.json)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return [path] + [path.with_name(f"{path.stem}-{i}.json") for i in range(1, count)]


def write_private_file(path: Path, content: bytes) -> None:
    """Create `path` with mode 0600 (never overwriting), writing `content` atomically-enough."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        # link() fails when the target exists, so a concurrent creator never gets overwritten.
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_password(
    *,
    env_var: str = PASSWORD_ENV,
    password_file: Path = DEFAULT_PASSWORD_FILE,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The keystore password: `env_var` when set and non-empty, else `password_file`.

    When the variable is unset and the file is missing, a new random password is generated
    with `secrets` and written to the file with mode 0600.
    """
    env = os.environ if environ is None else environ
    from_env = env.get(env_var, "")
    if from_env:
        return from_env
    if not password_file.exists():
        # FileExistsError: another process created it first, so use theirs.
        with contextlib.suppress(FileExistsError):
            write_private_file(password_file, secrets.token_urlsafe(32).encode("ascii"))
    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeystoreError(
            f"cannot read the keystore password file {password_file} ({exc.strerror}); "
            f"fix its permissions or set {env_var}"
        ) from None
    if not password:
        raise KeystoreError(
            f"the keystore password file {password_file} is empty; "
            f"delete it together with the keystore, or set {env_var}"
        )
    return password


def create_keystore(
    path: Path,
    password: str,
    *,
    kdf: Kdf = "scrypt",
    iterations: int | None = None,
) -> str:
    """Generate a new key, write it encrypted to `path` (mode 0600) and return its address.

    Refuses to overwrite an existing file (KeystoreError). `kdf`/`iterations` are passed to
    `Account.encrypt`; the defaults are eth-account's (scrypt, n=2**18).
    """
    account = Account.create()
    encrypted = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    try:
        write_private_file(path, json.dumps(encrypted).encode("utf-8"))
    except FileExistsError:
        raise KeystoreError(
            f"a keystore already exists at {path}; refusing to overwrite it"
        ) from None
    return str(account.address)


class KeystoreBackend:
    """A `KeyBackend` whose key is decrypted from a keystore file into this process."""

    backend_name = "keystore"

    def __init__(self, private_key: bytes, *, source: str) -> None:
        self._key = coincurve.PrivateKey(private_key)
        self._public_key = bytes(self._key.public_key.format(compressed=False))
        self._address = address_from_public_key(self._public_key)
        self._source = source
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never include the key.
        return f"KeystoreBackend(address={self._address!r}, source={self._source!r})"

    @property
    def address(self) -> str:
        """The key's checksummed address."""
        return self._address

    @property
    def public_key(self) -> bytes:
        """The key's uncompressed (65-byte) public key."""
        return self._public_key

    def sign_digest(self, digest: bytes) -> Signature:
        """Sign a 32-byte digest (RFC 6979 nonces, low `s`, recovery id in {0, 1})."""
        digest = check_digest(digest)
        with self._lock:
            # libsecp256k1 always produces a low `s`; the last byte is the recovery id.
            raw = self._key.sign_recoverable(digest, hasher=None)
        return Signature(
            v=raw[64], r=int.from_bytes(raw[:32], "big"), s=int.from_bytes(raw[32:64], "big")
        )

    @classmethod
    def load(cls, path: Path, password: str) -> KeystoreBackend:
        """Decrypt the keystore at `path`; a wrong password raises KeystoreError."""
        try:
            keyfile: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeystoreError(
                f"no keystore at {path}; create one with KeystoreBackend.load_or_create() "
                "or point the signer at an existing file"
            ) from None
        except OSError as exc:
            raise KeystoreError(f"cannot read the keystore {path} ({exc.strerror})") from None
        except ValueError:
            raise KeystoreError(f"the keystore {path} is not valid JSON") from None
        try:
            private_key = bytes(Account.decrypt(keyfile, password))
        except ValueError as exc:
            # eth-account says "MAC mismatch" for a wrong password; never echo the password.
            if "MAC mismatch" in str(exc):
                raise KeystoreError(
                    f"wrong password for the keystore {path}: set {PASSWORD_ENV} or fix the "
                    "password file to the password it was created with"
                ) from None
            raise KeystoreError(
                f"the keystore {path} is malformed or uses an unsupported format"
            ) from None
        except (KeyError, TypeError):
            raise KeystoreError(
                f"the keystore {path} is malformed or uses an unsupported format"
            ) from None
        return cls(private_key, source=str(path))

    @classmethod
    def load_or_create(
        cls,
        path: Path = DEFAULT_KEYSTORE_PATH,
        password: str | None = None,
        *,
        password_file: Path = DEFAULT_PASSWORD_FILE,
        kdf: Kdf = "scrypt",
        iterations: int | None = None,
    ) -> KeystoreBackend:
        """Load the keystore at `path`, creating it (and its password file) when missing.

        `password` defaults to `resolve_password(password_file=password_file)`.
        """
        if password is None:
            password = resolve_password(password_file=password_file)
        if not path.exists():
            try:
                create_keystore(path, password, kdf=kdf, iterations=iterations)
            except KeystoreError:
                if not path.exists():
                    raise
        return cls.load(path, password)
