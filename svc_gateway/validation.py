"""Checks a CreateWithdrawal request against the API rules and the reference data, collecting
every bad field at once, and turns it into a `NewWithdrawal` in integer base units."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.errors import (
    AMOUNT_ABOVE_MAXIMUM,
    SYSTEM_ADDRESS,
    TOKEN_DISABLED,
    UNKNOWN_CHAIN,
    UNKNOWN_TOKEN,
)
from withdrawal_shared.addresses import AddressError, parse_address
from withdrawal_shared.amounts import AmountError, BaseUnits, format_amount, parse_amount
from withdrawal_shared.db.reference import ReferenceData, TokenInfo
from withdrawal_shared.db.tier_admin import USER_REF, USER_REF_RULE
from withdrawal_shared.errors import (
    INVALID_ARGUMENT,
    ErrorReason,
    FieldViolation,
    invalid_argument,
    quoted,
)
from withdrawal_shared.states import Priority

DEFAULT_CHAIN = "polygon"
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
CLIENT_REFERENCE_MAX = 128
_PRIORITIES = {
    withdrawal_pb2.PRIORITY_UNSPECIFIED: Priority.STANDARD,
    withdrawal_pb2.PRIORITY_STANDARD: Priority.STANDARD,
    withdrawal_pb2.PRIORITY_PRIORITY: Priority.PRIORITY,
    withdrawal_pb2.PRIORITY_EMERGENCY: Priority.EMERGENCY,
}


@dataclass(frozen=True)
class NewWithdrawal:
    request_id: str
    fingerprint: str
    client_reference: str
    chain: str
    token: TokenInfo
    recipient: str
    amount: BaseUnits
    priority: Priority | None  # None: unspecified (the user's tier decides, else STANDARD)
    user_ref: str = ""
    key_prefix: str = ""  # the caller's key, named in the audit row of an EMERGENCY request
    trace_context: str | None = None  # the request's span (`withdrawal_shared.tracing`)


class _Checks:
    """Collects every violation of one request, and the most specific ErrorInfo reason."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        self.reasons: list[ErrorReason] = []

    def bad(self, field: str, description: str, reason: ErrorReason = INVALID_ARGUMENT) -> None:
        self.violations.append(FieldViolation(field, description))
        self.reasons.append(reason)

    def reason(self) -> str:
        return self.reasons[0].reason if len(self.reasons) == 1 else INVALID_ARGUMENT.reason


def _check_request_id(request_id: str, checks: _Checks) -> None:
    if not request_id:
        checks.bad(
            "request_id",
            "is required: a unique key per withdrawal",
        )
    elif not REQUEST_ID.match(request_id):
        checks.bad("request_id", "must be 1-128 characters of letters, digits and . _ : -")


def _check_token(
    w: withdrawal_pb2.Withdrawal, chain: str, reference: ReferenceData, checks: _Checks
) -> TokenInfo | None:
    chain_info = reference.chains.get(chain)
    if chain_info is None or not chain_info.enabled:
        checks.bad("withdrawal.chain", f"{quoted(chain)} is not a supported chain", UNKNOWN_CHAIN)
        return None
    if not w.token:
        checks.bad("withdrawal.token", 'is required, e.g. "USDC"')
        return None
    token = reference.tokens.get((chain, w.token))
    if token is None:
        known = sorted(s for (c, s) in reference.tokens if c == chain)
        checks.bad(
            "withdrawal.token",
            f"{quoted(w.token)} is not a token on {chain}; known: {', '.join(known) or 'none'}",
            UNKNOWN_TOKEN,
        )
        return None
    if not token.enabled:
        checks.bad("withdrawal.token", f"{w.token} payouts are disabled on {chain}", TOKEN_DISABLED)
        return None
    return token


def _check_recipient(text: str, reference: ReferenceData, checks: _Checks) -> str:
    try:
        recipient: str = parse_address(text)
    except AddressError as exc:
        checks.bad("withdrawal.recipient_address", str(exc))
        return ""
    if recipient in reference.system_addresses:
        checks.bad(
            "withdrawal.recipient_address",
            "is one of this system's own contracts or wallets; pay a user address",
            SYSTEM_ADDRESS,
        )
    return recipient


def _check_amount(text: str, token: TokenInfo | None, checks: _Checks) -> BaseUnits:
    if token is None:
        if not text:
            checks.bad("withdrawal.amount", 'is required, e.g. "12.5"')
        return BaseUnits(0)
    try:
        amount = parse_amount(text, token.decimals)
    except AmountError as exc:
        checks.bad("withdrawal.amount", str(exc))
        return BaseUnits(0)
    if amount > token.max_amount_base_units:
        maximum = format_amount(token.max_amount_base_units, token.decimals)
        checks.bad(
            "withdrawal.amount",
            f"exceeds the {token.symbol} maximum of {maximum} per withdrawal",
            AMOUNT_ABOVE_MAXIMUM,
        )
    return amount


def validate_create(
    request: withdrawal_pb2.CreateWithdrawalRequest, reference: ReferenceData
) -> NewWithdrawal:
    """The validated withdrawal, or ApiError INVALID_ARGUMENT naming every bad field."""
    checks = _Checks()
    _check_request_id(request.request_id, checks)
    if not request.HasField("withdrawal"):
        checks.bad("withdrawal", "is required")
        raise invalid_argument(checks.violations, checks.reason())
    new = _check_fields(request.request_id, request.withdrawal, reference, checks)
    if checks.violations or new is None:
        raise invalid_argument(checks.violations, checks.reason())
    return new


def check_withdrawal(
    request_id: str, w: withdrawal_pb2.Withdrawal, reference: ReferenceData
) -> tuple[NewWithdrawal | None, list[tuple[FieldViolation, ErrorReason]]]:
    """The same checks as `validate_create` for one withdrawal whose request_id the caller
    made itself (a batch row): the withdrawal, or None and every problem with its reason
    (fields named `withdrawal.<field>`)."""
    checks = _Checks()
    new = _check_fields(request_id, w, reference, checks)
    problems = list(zip(checks.violations, checks.reasons, strict=True))
    return (None if problems else new), problems


def _check_fields(
    request_id: str, w: withdrawal_pb2.Withdrawal, reference: ReferenceData, checks: _Checks
) -> NewWithdrawal | None:
    chain = w.chain or DEFAULT_CHAIN
    token = _check_token(w, chain, reference, checks)
    recipient = _check_recipient(w.recipient_address, reference, checks)
    amount = _check_amount(w.amount, token, checks)
    if len(w.client_reference) > CLIENT_REFERENCE_MAX or not w.client_reference.isprintable():
        checks.bad(
            "withdrawal.client_reference",
            f"must be at most {CLIENT_REFERENCE_MAX} printable characters",
        )
    if w.user_ref and not USER_REF.match(w.user_ref):
        checks.bad("withdrawal.user_ref", USER_REF_RULE)
    priority = _PRIORITIES.get(w.priority)
    if priority is None:
        checks.bad("withdrawal.priority", "is not a known priority")
    if checks.violations or token is None or priority is None:
        return None
    requested: Priority | None = priority
    if w.priority == withdrawal_pb2.PRIORITY_UNSPECIFIED and w.user_ref:
        requested = None  # the user's tier decides
    return NewWithdrawal(
        request_id=request_id,
        fingerprint=fingerprint(
            chain, token.symbol, recipient, amount, requested, w.client_reference, w.user_ref
        ),
        client_reference=w.client_reference,
        chain=chain,
        token=token,
        recipient=recipient,
        amount=amount,
        priority=requested,
        user_ref=w.user_ref,
    )


def fingerprint(
    chain: str,
    symbol: str,
    recipient: str,
    amount: int,
    priority: Priority | None,
    client_reference: str,
    user_ref: str,
) -> str:
    """What a repeat of a request must match, as stored: the body's fields after parsing.

    A request without `user_ref` hashes as before it existed (no priority is STANDARD), so
    the repeat of a withdrawal stored earlier still matches. With a `user_ref`, an
    unspecified priority (the tier's default) differs from any explicit one."""
    parts = [
        chain,
        symbol,
        recipient,
        str(amount),
        priority.value if priority else "",
        client_reference,
    ]
    if user_ref:
        parts.append(user_ref)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
