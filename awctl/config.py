"""Where awctl's target and operator credential come from.

In order: the `--target`/`--credential` flags, the `AWCTL_TARGET`/`AWCTL_CREDENTIAL`
variables, then the `grpc_target`/`admin_credential` of the stack file that `make up` writes
(`AWCTL_STACK_JSON`, else `$AWS_VAR_DIR/stack.json`, else `var/stack.json` of this checkout).
Each value remembers where it came from, so an error can say what to check. A credential is
only ever shown by its public prefix (`awo_<8 hex>…`).

`awctl batches` calls the partners' BatchService, which takes a partner API key, not an
operator credential: `--api-key`, else `AWCTL_API_KEY`, else the stack file's `api_key`
(`resolve_partner`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

TARGET_ENV = "AWCTL_TARGET"
CREDENTIAL_ENV = "AWCTL_CREDENTIAL"
API_KEY_ENV = "AWCTL_API_KEY"
STACK_JSON_ENV = "AWCTL_STACK_JSON"
VAR_DIR_ENV = "AWS_VAR_DIR"

CHECKOUT = Path(__file__).resolve().parents[1]


class ConfigError(Exception):
    """The configuration cannot be used: a usage error (exit status 2)."""


def stack_json_path() -> Path:
    explicit = os.environ.get(STACK_JSON_ENV)
    if explicit:
        return Path(explicit)
    var_dir = os.environ.get(VAR_DIR_ENV)
    if var_dir:
        return Path(var_dir) / "stack.json"
    return CHECKOUT / "var" / "stack.json"


def credential_prefix(credential: str) -> str:
    """What may be shown of a credential: `awo_<8 hex>…`, never the secret part."""
    head, sep, _ = credential.partition("_")
    if sep:
        ident, sep2, _ = credential[len(head) + 1 :].partition("_")
        if sep2 and 0 < len(ident) <= 16:
            return f"{head}_{ident}…"
    return f"{credential[:4]}…" if len(credential) > 4 else "…"


@dataclass(frozen=True)
class Config:
    target: str
    target_source: str
    credential: str
    credential_source: str
    kind: str = "operator"
    """"operator" (an `awo_…` credential, the AdminService) or "partner" (an `awk_…` API key,
    the public services such as BatchService)."""

    @property
    def shown_credential(self) -> str:
        return credential_prefix(self.credential)


def _read_stack(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _valid_credential(credential: str, source: str) -> str:
    if not credential.isascii() or not credential.isprintable() or " " in credential:
        raise ConfigError(
            f"the credential from {source} has spaces or characters a header cannot carry"
        )
    return credential


def resolve(target: str | None, credential: str | None) -> Config:
    """The configuration from the flags (None when not given), the environment and the stack
    file; ConfigError naming every place to set what is missing."""
    target_source = "--target"
    credential_source = "--credential"
    if not target and os.environ.get(TARGET_ENV):
        target, target_source = os.environ[TARGET_ENV], TARGET_ENV
    if not credential and os.environ.get(CREDENTIAL_ENV):
        credential, credential_source = os.environ[CREDENTIAL_ENV], CREDENTIAL_ENV
    path = stack_json_path()
    if not target or not credential:
        stack = _read_stack(path)
        if stack is not None:
            if not target and isinstance(stack.get("grpc_target"), str):
                target, target_source = str(stack["grpc_target"]), f"{path} (grpc_target)"
            if not credential and isinstance(stack.get("admin_credential"), str):
                credential = str(stack["admin_credential"])
                credential_source = f"{path} (admin_credential)"
    if not target:
        raise ConfigError(
            f"no gateway target: pass --target HOST:PORT, set {TARGET_ENV}, or run `make up` "
            f"(awctl reads its grpc_target from {path}; {STACK_JSON_ENV} names another file)"
        )
    if not credential:
        raise ConfigError(
            f"no operator credential: pass --credential, set {CREDENTIAL_ENV} (an `awo_…` "
            f"credential), or run `make up` (awctl reads its admin_credential from {path})"
        )
    return Config(
        target, target_source, _valid_credential(credential, credential_source), credential_source
    )


def resolve_partner(target: str | None, api_key: str | None) -> Config:
    """The target as `resolve` finds it, with a partner API key (`awk_…`) from `--api-key`,
    `AWCTL_API_KEY` or the stack file's `api_key`; ConfigError naming where to set it."""
    target_source = "--target"
    key_source = "--api-key"
    if not target and os.environ.get(TARGET_ENV):
        target, target_source = os.environ[TARGET_ENV], TARGET_ENV
    if not api_key and os.environ.get(API_KEY_ENV):
        api_key, key_source = os.environ[API_KEY_ENV], API_KEY_ENV
    path = stack_json_path()
    if not target or not api_key:
        stack = _read_stack(path)
        if stack is not None:
            if not target and isinstance(stack.get("grpc_target"), str):
                target, target_source = str(stack["grpc_target"]), f"{path} (grpc_target)"
            if not api_key and isinstance(stack.get("api_key"), str):
                api_key, key_source = str(stack["api_key"]), f"{path} (api_key)"
    if not target:
        raise ConfigError(
            f"no gateway target: pass --target HOST:PORT, set {TARGET_ENV}, or run `make up` "
            f"(awctl reads its grpc_target from {path}; {STACK_JSON_ENV} names another file)"
        )
    if not api_key:
        raise ConfigError(
            "no partner API key: batches are the partners' API, so pass --api-key or set "
            f"{API_KEY_ENV} (an `awk_…` key with the batches:create scope), or run `make up` "
            f"(awctl reads its api_key from {path})"
        )
    return Config(
        target, target_source, _valid_credential(api_key, key_source), key_source, "partner"
    )
