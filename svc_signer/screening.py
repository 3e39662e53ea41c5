"""The signer's own approval and blocklist checks (defence in depth: the processor checks the
same before it asks), read from the database inside the signing transaction, after the
withdrawals were locked:

- NOT_APPROVED (FAILED_PRECONDITION, metadata `problem` = `approvals`): an item's withdrawal
  was held for approval and its recorded approvals (distinct operators other than its
  creator) are fewer than its rule required, or its approval request did not end APPROVED.
- RECIPIENT_BLOCKED (PERMISSION_DENIED): an item pays an address on the blocklist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from withdrawal_shared.approvals.core import ApprovalGap
from withdrawal_shared.errors import ApiError, Code

NOT_APPROVED = "NOT_APPROVED"
RECIPIENT_BLOCKED = "RECIPIENT_BLOCKED"


class Item(Protocol):
    @property
    def withdrawal_id(self) -> str: ...
    @property
    def recipient(self) -> str: ...


def check_approvals(items: Iterable[Item], gaps: Mapping[str, ApprovalGap]) -> None:
    """No item's withdrawal lacks an approval its rule required."""
    for item in items:
        gap = gaps.get(item.withdrawal_id)
        if gap is not None:
            raise ApiError(
                Code.FAILED_PRECONDITION,
                NOT_APPROVED,
                f"Withdrawal {item.withdrawal_id} needs {gap.required} operator approval(s) and "
                f"has {gap.approved} recorded; it cannot be paid by this transaction.",
                metadata={
                    "withdrawal_id": item.withdrawal_id,
                    "problem": "approvals",
                    "required": str(gap.required),
                    "approved": str(gap.approved),
                },
            )


def check_recipients(items: Iterable[Item], blocked: frozenset[str]) -> None:
    """No item pays a blocked address."""
    for item in items:
        if item.recipient in blocked:
            raise ApiError(
                Code.PERMISSION_DENIED,
                RECIPIENT_BLOCKED,
                f"Withdrawal {item.withdrawal_id} pays {item.recipient}, which is on the "
                "blocklist; this signer never pays it.",
                metadata={"withdrawal_id": item.withdrawal_id, "recipient": item.recipient},
            )
