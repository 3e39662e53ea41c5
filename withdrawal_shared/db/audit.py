"""The hash chain of the audit trail: each row's hash covers its content and the previous
row's hash, so editing or deleting any row of a withdrawal's trail is detectable."""

from __future__ import annotations

import datetime as dt
import hashlib

GENESIS = "0" * 64


def audit_hash(
    *,
    prev_hash: str,
    withdrawal_id: str,
    version: int,
    from_state: str,
    to_state: str,
    actor: str,
    reason: str,
    message: str,
    reorged: bool,
    occur_time: dt.datetime,
) -> str:
    fields = (
        prev_hash,
        withdrawal_id,
        str(version),
        from_state,
        to_state,
        actor,
        reason,
        message,
        "1" if reorged else "0",
        occur_time.strftime("%Y-%m-%dT%H:%M:%S.%f"),
    )
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()
