"""Provisioning of a local SoftHSM2 token for tests and `make up` (never a system token).

`provision_softhsm(base_dir)` makes `<base_dir>/softhsm2/` hold a `softhsm2.conf` whose
`directories.tokendir` points inside it, sets SOFTHSM2_CONF for this process, initialises a token
with `softhsm2-util --init-token --free` when none has the configured label, and generates the
secp256k1 key inside the token when it is missing. It is idempotent: a second call finds the
token and the key and only returns their details.

When no PIN is given, a random user PIN and SO PIN are generated with `secrets` and kept in
`<base_dir>/softhsm2/user.pin` and `so.pin` (mode 0600) so later runs reuse them.

SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, which happens once per process:
use one SoftHSM2 directory per process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from svc_signer.keys.backend import address_from_public_key
from svc_signer.keys.keystore import write_private_file
from svc_signer.keys.pkcs11_hsm import (
    DEFAULT_KEY_LABEL,
    DEFAULT_TOKEN_LABEL,
    Pkcs11Error,
    Pkcs11Settings,
    ec_point_to_public_key,
    find_key_pair,
    generate_secp256k1_key,
    load_library,
    login,
    open_token,
)

SOFTHSM2_CONF_ENV = "SOFTHSM2_CONF"
SOFTHSM2_UTIL = "softhsm2-util"
_INSTALL_HINT = "SoftHSM2 is not installed: run `make softhsm` (Debian package softhsm2)"


@dataclass(frozen=True)
class SoftHsmToken:
    """A provisioned SoftHSM2 token: where it lives, how to open it, and its key's address."""

    conf_path: Path
    token_dir: Path
    settings: Pkcs11Settings
    address: str
    key_created: bool


def softhsm2_util() -> str:
    """The path of `softhsm2-util`; raises Pkcs11Error saying `make softhsm` when absent."""
    path = shutil.which(SOFTHSM2_UTIL)
    if path is None:
        raise Pkcs11Error(_INSTALL_HINT)
    return path


def write_softhsm_conf(base_dir: Path) -> Path:
    """Write `<base_dir>/softhsm2/softhsm2.conf` (token dir inside it) and return its path."""
    root = (base_dir / "softhsm2").resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    token_dir = root / "tokens"
    token_dir.mkdir(mode=0o700, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    return conf


def _secret_file(path: Path) -> str:
    """The secret in `path`, generated with `secrets` (mode 0600) when the file is missing."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            write_private_file(path, secrets.token_hex(16).encode("ascii"))
    return path.read_text(encoding="utf-8").strip()


def _run_util(args: list[str], env: dict[str, str]) -> str:
    """Run softhsm2-util with `args`; its output, or Pkcs11Error without echoing the args."""
    result = subprocess.run(  # noqa: S603 - fixed executable, arguments are not shell-parsed
        [softhsm2_util(), *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise Pkcs11Error(
            f"softhsm2-util {args[0]} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[:500]}"
        )
    return result.stdout


def _token_labels(env: dict[str, str]) -> set[str]:
    """The labels of the initialised tokens that the SoftHSM2 config in `env` holds."""
    labels: set[str] = set()
    for line in _run_util(["--show-slots"], env).splitlines():
        name, _, value = line.strip().partition(":")
        if name == "Label" and value.strip():
            labels.add(value.strip())
    return labels


def provision_softhsm(
    base_dir: Path,
    *,
    token_label: str = DEFAULT_TOKEN_LABEL,
    key_label: str = DEFAULT_KEY_LABEL,
    pin: str | None = None,
    so_pin: str | None = None,
    library_path: str | None = None,
) -> SoftHsmToken:
    """Make sure a SoftHSM2 token and its secp256k1 key exist under `base_dir`.

    Sets SOFTHSM2_CONF in this process's environment. Raises Pkcs11Error saying `make softhsm`
    when SoftHSM2 is not installed.
    """
    softhsm2_util()  # fail with the install hint before touching anything
    conf = write_softhsm_conf(base_dir)
    secrets_dir = conf.parent
    if pin is None:
        pin = _secret_file(secrets_dir / "user.pin")
    if so_pin is None:
        so_pin = _secret_file(secrets_dir / "so.pin")
    os.environ[SOFTHSM2_CONF_ENV] = str(conf)
    env = {**os.environ, SOFTHSM2_CONF_ENV: str(conf)}

    if token_label not in _token_labels(env):
        _run_util(
            [
                "--init-token",
                "--free",
                "--label",
                token_label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ],
            env,
        )

    settings = Pkcs11Settings(
        pin=pin, token_label=token_label, key_label=key_label, library_path=library_path
    )
    lib = load_library(library_path)
    token = open_token(lib, token_label)
    session = login(token, pin, rw=True)
    try:
        pair = find_key_pair(session, key_label)
        key_created = pair is None
        if pair is None:
            pair = generate_secp256k1_key(session, key_label)
        public, _private = pair
        from pkcs11 import Attribute

        public_key = ec_point_to_public_key(public[Attribute.EC_POINT])
    finally:
        session.close()
    return SoftHsmToken(
        conf_path=conf,
        token_dir=conf.parent / "tokens",
        settings=settings,
        address=address_from_public_key(public_key),
        key_created=key_created,
    )
