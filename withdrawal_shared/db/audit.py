"""The hash chain of the audit trail: each row's hash covers its content and the previous
row's hash, so editing or deleting any row of a withdrawal's trail is detectable.

Each row also keeps a snapshot of the withdrawal's fields that change over its life apart
from the state: the transaction hash, the fee and the confirmations, as they were right after
the change (`Snapshot`, stored as canonical JSON in `withdrawal_audit.snapshot`). With the
row's state, reason, message and time, it is everything a watcher's event shows that the
withdrawal's immutable fields do not, so an event is rebuilt from its audit row alone. The
hash covers the snapshot's stored text. Rows written before migration 0008 have no snapshot
(NULL); their hash is computed exactly as it was then, without it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

GENESIS = "0" * 64
_json_string = json.encoder.encode_basestring_ascii  # a str as json.dumps writes it

SNAPSHOT_FIELDS = ("tx_hash", "fee_wei", "confirmations")
"""The `withdrawals` columns an audit row's snapshot records."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The withdrawal's changing fields (other than its state) right after an audited change."""

    tx_hash: str | None = None
    fee_wei: int | None = None
    confirmations: int = 0

    def encode(self) -> str:
        """Canonical JSON (sorted keys, no spaces; the fee as a decimal string, exact at any
        size): the text stored and hashed. Written directly for the plain types (what
        `json.dumps(..., separators=(",", ":"), sort_keys=True)` writes, without building an
        encoder per call: every audit row encodes one)."""
        tx_hash, fee_wei, confirmations = self.tx_hash, self.fee_wei, self.confirmations
        if (
            type(confirmations) is int
            and (fee_wei is None or type(fee_wei) is int)
            and (tx_hash is None or type(tx_hash) is str)
        ):
            fee = "null" if fee_wei is None else f'"{fee_wei}"'
            tx = "null" if tx_hash is None else _json_string(tx_hash)
            return f'{{"confirmations":{confirmations},"fee_wei":{fee},"tx_hash":{tx}}}'
        return json.dumps(
            {
                "confirmations": confirmations,
                "fee_wei": None if fee_wei is None else str(fee_wei),
                "tx_hash": tx_hash,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str | None) -> Snapshot | None:
        """The stored snapshot, or None for a row written without one (before 0008)."""
        if text is None:
            return None
        data = json.loads(text)
        fee = data.get("fee_wei")
        return cls(
            tx_hash=data.get("tx_hash"),
            fee_wei=None if fee is None else int(fee),
            confirmations=int(data.get("confirmations") or 0),
        )


NEW_SNAPSHOT = Snapshot()
"""A new withdrawal's: no transaction, no fee, no confirmations."""
NEW_SNAPSHOT_TEXT = NEW_SNAPSHOT.encode()
"""Its stored text, encoded once (every new withdrawal's first audit row carries it)."""


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
    snapshot: str | None = None,
    occur_text: str | None = None,
) -> str:
    """SHA-256 over the row's fields joined by U+001F; the snapshot text is the last field
    when there is one (None only for rows written before it existed). `occur_text`: the
    `occur_time_text` of `occur_time`, when the caller has it (many rows of one time)."""
    fields = [
        prev_hash,
        withdrawal_id,
        str(version),
        from_state,
        to_state,
        actor,
        reason,
        message,
        "1" if reorged else "0",
        occur_text if occur_text is not None else occur_time_text(occur_time),
    ]
    if snapshot is not None:
        fields.append(snapshot)
    return chain_digest(fields)


def occur_time_text(occur_time: dt.datetime) -> str:
    """The occur_time as `audit_hash` hashes it."""
    return occur_time.strftime("%Y-%m-%dT%H:%M:%S.%f")


def chain_digest(fields: list[str]) -> str:
    """SHA-256 (hex) over `fields` joined by U+001F: the hash of every hash-chained trail
    (the withdrawal audit rows above, and the admin audit trail)."""
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()
