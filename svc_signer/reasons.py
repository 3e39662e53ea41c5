"""The ErrorInfo reasons of the signer's policy refusals, and `refusal` that raises them.

One enum for both roles: the hot-wallet policy (`svc_signer.core`, which documents its reasons)
and the Safe owner's policy (`svc_signer.safe_owner`, which documents the Safe reasons and
the hot wallet's execution of Safe transactions). Kept apart from both so that the Safe rules
(`svc_signer.safe_rules`) can be shared by the two without an import cycle.
"""

from __future__ import annotations

import enum

from svc_signer import screening
from withdrawal_shared.errors import ApiError, Code
from withdrawal_shared.holds import HoldReason


class Reason(enum.StrEnum):
    """ErrorInfo reasons of the signer's policy refusals."""

    WRONG_CHAIN = "WRONG_CHAIN"
    UNKNOWN_WALLET = "UNKNOWN_WALLET"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    NONZERO_VALUE = "NONZERO_VALUE"
    UNSUPPORTED_CALLDATA = "UNSUPPORTED_CALLDATA"
    CALLDATA_MISMATCH = "CALLDATA_MISMATCH"
    NOT_APPROVED = "NOT_APPROVED"
    ALREADY_SIGNED_AT_OTHER_NONCE = "ALREADY_SIGNED_AT_OTHER_NONCE"
    INVALID_NONCE_RELEASE = "INVALID_NONCE_RELEASE"
    PAUSED = HoldReason.PAUSED.value  # the refusal is named as the hold it causes
    RECIPIENT_BLOCKED = screening.RECIPIENT_BLOCKED
    KEY_BACKEND_UNAVAILABLE = "KEY_BACKEND_UNAVAILABLE"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    # The treasury Safe (svc_signer/safe_owner.py documents them).
    SAFE_NOT_TREASURY = "SAFE_NOT_TREASURY"
    NOT_SAFE_OWNER = "NOT_SAFE_OWNER"
    SAFE_DELEGATECALL = "SAFE_DELEGATECALL"
    SAFE_GAS_REFUND = "SAFE_GAS_REFUND"
    SAFE_SELF_CALL = "SAFE_SELF_CALL"
    BELOW_SAFE_THRESHOLD = "BELOW_SAFE_THRESHOLD"
    CHANGE_NOT_APPLIED = "CHANGE_NOT_APPLIED"
    CHANGE_CALL_MISMATCH = "CHANGE_CALL_MISMATCH"
    SAFE_NONCE_ALREADY_SIGNED = "SAFE_NONCE_ALREADY_SIGNED"
    OWNER_SIGNATURES_BELOW_THRESHOLD = "OWNER_SIGNATURES_BELOW_THRESHOLD"
    # Key rotation (svc_signer/key_states.py documents them).
    WALLET_RETIRED = "WALLET_RETIRED"
    INVALID_GAS_SWEEP = "INVALID_GAS_SWEEP"
    GAS_SWEEP_ALREADY_SIGNED = "GAS_SWEEP_ALREADY_SIGNED"
    KEY_CREATION_UNSUPPORTED = "KEY_CREATION_UNSUPPORTED"


def refusal(code: Code, reason: Reason, message: str, **metadata: object) -> ApiError:
    """A policy refusal with its ErrorInfo reason and string metadata."""
    return ApiError(code, reason.value, message, metadata={k: str(v) for k, v in metadata.items()})
