"""The ErrorInfo reasons the approval and blocklist core functions raise (with the shared
INVALID_ARGUMENT and NOT_FOUND); a transport in front of them (the admin API) renders them."""

from __future__ import annotations

from withdrawal_shared.errors import Code, ErrorReason

NOT_PENDING_APPROVAL = ErrorReason(
    "NOT_PENDING_APPROVAL",
    Code.FAILED_PRECONDITION,
    "The withdrawal is not waiting for approval (`metadata.state` says where it is).",
    example="Withdrawal 01j9zq8m5k3v7t2r4w6y8a0c1e is QUEUED, not waiting for approval; nothing "
    "was recorded.",
)
SELF_APPROVAL = ErrorReason(
    "SELF_APPROVAL",
    Code.PERMISSION_DENIED,
    "The operator created the withdrawal and cannot approve it; another operator must.",
    example="Operator alice created withdrawal 01j9zq8m5k3v7t2r4w6y8a0c1e and cannot approve "
    "it; another operator must.",
)
CONCURRENT_MODIFICATION = ErrorReason(
    "CONCURRENT_MODIFICATION",
    Code.ABORTED,
    "The withdrawal kept changing while the decision was recorded; retry.",
)
