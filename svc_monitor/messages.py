"""The state messages the monitor writes beside a withdrawal's confirmations.

A CONFIRMING withdrawal's message states its count; the monitor rewrites both together in one
UPDATE whenever the count changes, so the message never states another count than the field
beside it (the audit row of the move into CONFIRMING keeps the message and the count of that
version).
"""

from __future__ import annotations


def confirming_message(block_number: int, tx_hash: str | None, depth: int, required: int) -> str:
    """A mined payout still below the confirmation depth."""
    return (
        f"Mined in block {block_number} (transaction {tx_hash}); "
        f"{depth} of {required} confirmations."
    )


def paid_message(block_number: int | None, tx_hash: str | None, depth: int) -> str:
    """A payout at the confirmation depth: the withdrawal is COMPLETED."""
    return f"Paid: transaction {tx_hash} in block {block_number} has {depth} confirmations."
