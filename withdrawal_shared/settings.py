"""Helpers for the one settings object each service reads from its environment.

Each service declares a frozen dataclass of its settings with documented defaults and builds
it with `from_env()`; these helpers parse values and fail with a message naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from withdrawal_shared.errors import WithdrawalSystemError

REPO_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AWS_VAR_DIR", REPO_ROOT / "var"))

DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'withdrawals.sqlite3'}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(WithdrawalSystemError):
    """A setting in the environment cannot be used; the message names the variable."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below its minimum {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")
