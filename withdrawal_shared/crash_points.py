"""Named crash points: where a test may `kill -9` a service from the inside.

Invariants 1, 2 and 4 of the design must hold "after a crash of any process at any line". A
test cannot time an outside `kill -9` to land between two particular statements, so the
services call `crash_point(name)` at the steps where a crash is most dangerous (between a
durable effect and the record of it), and a test arms one of them through the environment:

- `AWS_CRASH_AT`: a point name from `CRASH_POINTS` (or several, comma-separated);
- `AWS_CRASH_ONCE_DIR`: a directory for the markers that make each point fire once.

An armed point SIGKILLs its own process, exactly like `kill -9`: no `finally`, no atexit, no
flushed buffers, an open database transaction left for the server to roll back. Before that
it creates the marker `$AWS_CRASH_ONCE_DIR/<name>` with O_CREAT|O_EXCL and only crashes when
it created it: the supervisor restarts the service with the same environment, and the
restarted process must run past the point to show that it recovers. The marker (holding the
pid that died) is also the test's proof that the process really died there.

A name in `AWS_CRASH_AT` that is not registered, or `AWS_CRASH_AT` without
`AWS_CRASH_ONCE_DIR`, raises `CrashPointError` when this module is imported (every service
imports it at start-up, so it fails loudly instead of letting a typo pass a test vacuously).
Calling `crash_point` with an unregistered name raises too, armed or not. When nothing is
armed a call costs two set lookups.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

ENV_AT: Final = "AWS_CRASH_AT"
ENV_ONCE_DIR: Final = "AWS_CRASH_ONCE_DIR"

CRASH_POINTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "gateway.after_insert_before_enqueue": (
            "the withdrawal row is committed (RECEIVED) but its task is not on the queue and "
            "the client got no reply"
        ),
        "gateway.after_enqueue_before_reply": (
            "the withdrawal is committed and enqueued, but the client got no reply"
        ),
        "processor.after_process_before_ack": (
            "a task's effects are committed but the queue message is not acknowledged"
        ),
        "processor.after_nonce_reserved": (
            "a payout row holds the wallet's next nonce (RESERVED) and nothing is signed yet"
        ),
        "processor.after_signed_before_store": (
            "the signer signed (and recorded) the payout; the bytes are not stored yet"
        ),
        "processor.after_store_before_broadcast": (
            "the signed bytes are stored (SIGNED) but were never sent"
        ),
        "processor.after_broadcast_before_record": (
            "the node accepted the bytes but the payout is not recorded as BROADCAST"
        ),
        "processor.after_replacement_signed": (
            "a stuck payout's replacement is signed (same nonce, higher fees) but not stored"
        ),
        "signer.after_ledger_before_reply": (
            "the signer signed and committed its ledger entry, but never replied"
        ),
        "monitor.after_receipt_before_update": (
            "the monitor read a payout's receipt but recorded nothing of it"
        ),
        "monitor.mid_state_update": (
            "inside the transaction recording a confirmation: the payout row is CONFIRMED, "
            "its withdrawals not yet COMPLETED (the transaction must roll back)"
        ),
        "monitor.after_complete_before_publish": (
            "withdrawals are committed COMPLETED but their events are not published"
        ),
    }
)
"""Every crash point: name (`<service>.<where>`) -> what is true when it fires."""


class CrashPointError(RuntimeError):
    """A crash point name that is not registered, or crash variables that cannot work."""


def service_of(name: str) -> str:
    """The service a point belongs to (`processor.after_nonce_reserved` -> `processor`)."""
    return name.split(".", 1)[0]


def parse_armed(environ: Mapping[str, str]) -> frozenset[str]:
    """The points armed by `environ` (empty when `AWS_CRASH_AT` is unset or empty).

    Raises `CrashPointError` naming every unknown point, or when no marker directory is set
    (without markers an armed point would kill every restart too: a crash loop)."""
    raw = environ.get(ENV_AT, "")
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        return frozenset()
    unknown = sorted(names - CRASH_POINTS.keys())
    if unknown:
        raise CrashPointError(
            f"{ENV_AT} names unknown crash point(s) {', '.join(unknown)}; the registered ones "
            f"are in withdrawal_shared/crash_points.py: {', '.join(sorted(CRASH_POINTS))}"
        )
    if not environ.get(ENV_ONCE_DIR, ""):
        raise CrashPointError(
            f"{ENV_AT} is set but {ENV_ONCE_DIR} is not: set it to a directory for the markers "
            "that make each point crash only once"
        )
    return names


_ARMED: frozenset[str] = parse_armed(os.environ)
_ONCE_DIR: str = os.environ.get(ENV_ONCE_DIR, "")


def claim(once_dir: str | os.PathLike[str], name: str) -> bool:
    """Create the marker of `name` in `once_dir`; False when it exists (the point fired in an
    earlier process of this run). Atomic (O_EXCL), so two processes never both crash."""
    directory = Path(once_dir)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return True


def crash_point(name: str) -> None:
    """SIGKILL this process here if `name` is armed and has not fired yet in this run."""
    if name not in CRASH_POINTS:
        raise CrashPointError(f"{name!r} is not a registered crash point (CRASH_POINTS)")
    if name not in _ARMED or not claim(_ONCE_DIR, name):
        return
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = [
    "CRASH_POINTS",
    "ENV_AT",
    "ENV_ONCE_DIR",
    "CrashPointError",
    "claim",
    "crash_point",
    "parse_armed",
    "service_of",
]
