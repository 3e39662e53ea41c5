"""The signer's approval and blocklist refusals, as pure functions over what it read."""

from __future__ import annotations

import pytest

from svc_signer.core import PayoutItem
from svc_signer.reasons import Reason
from svc_signer.screening import check_approvals, check_recipients
from withdrawal_shared.approvals.core import ApprovalGap
from withdrawal_shared.errors import ApiError, Code

ITEM = PayoutItem("01" + "A" * 24, "0x" + "ab" * 20, 5, "0x" + "cd" * 20)


def test_missing_approvals_are_refused_with_counts() -> None:
    check_approvals([ITEM], {})
    with pytest.raises(ApiError) as refused:
        check_approvals([ITEM], {ITEM.withdrawal_id: ApprovalGap(ITEM.withdrawal_id, 2, 1)})
    err = refused.value
    assert (err.code, err.reason) == (Code.FAILED_PRECONDITION, Reason.NOT_APPROVED)
    assert err.metadata == {
        "withdrawal_id": ITEM.withdrawal_id,
        "problem": "approvals",
        "required": "2",
        "approved": "1",
    }


def test_blocked_recipient_is_refused() -> None:
    check_recipients([ITEM], frozenset({"0x" + "ee" * 20}))
    with pytest.raises(ApiError) as refused:
        check_recipients([ITEM], frozenset({ITEM.recipient}))
    assert (refused.value.code, refused.value.reason) == (
        Code.PERMISSION_DENIED,
        Reason.RECIPIENT_BLOCKED,
    )
