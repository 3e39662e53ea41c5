"""Attributing a payout transaction's fee to the withdrawals it pays."""

from __future__ import annotations

from collections.abc import Iterable


def split_fee(fee_wei: int, withdrawal_ids: Iterable[str]) -> dict[str, int]:
    """Split `fee_wei` across the withdrawals paid by one transaction, exactly.

    The rule: every withdrawal gets `fee_wei // n` wei; the remainder (`fee_wei % n`, fewer than
    n wei) goes to the first withdrawal by id (ids are ULIDs, so the oldest). The shares always
    add up to `fee_wei`, and the split depends only on the set of ids, never on the order they
    were read in. All withdrawals linked to the transaction count, whatever their state.
    """
    if fee_wei < 0:
        raise ValueError("a fee cannot be negative")
    ids = sorted(set(withdrawal_ids))
    if not ids:
        return {}
    share, remainder = divmod(fee_wei, len(ids))
    shares = dict.fromkeys(ids, share)
    shares[ids[0]] += remainder
    return shares
