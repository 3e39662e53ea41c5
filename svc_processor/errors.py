"""What can go wrong while processing, and how chain RPC errors are classified."""

from __future__ import annotations

from withdrawal_shared.errors import WithdrawalSystemError


class TransientError(WithdrawalSystemError):
    """Nothing was changed; try again later (the message stays unacknowledged)."""


class SignerRefused(WithdrawalSystemError):
    """The signer's policy refused; `reason` is its ErrorInfo reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


ALREADY_KNOWN = ("already known", "known transaction", "already imported")
NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")
# Another transaction holds the nonce and this one does not pay enough more to replace it.
UNDERPRICED = (
    "replacement transaction underpriced",
    "replacement fee too low",
    "transaction underpriced",
    "underpriced",
)


def rpc_error_kind(message: str) -> str:
    """Classify an eth_sendRawTransaction error: already_known, nonce_too_low, underpriced,
    other."""
    lowered = message.lower()
    if any(marker in lowered for marker in ALREADY_KNOWN):
        return "already_known"
    if any(marker in lowered for marker in NONCE_TOO_LOW):
        return "nonce_too_low"
    if any(marker in lowered for marker in UNDERPRICED):
        return "underpriced"
    return "other"
