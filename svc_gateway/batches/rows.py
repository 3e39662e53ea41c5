"""One row of a batch file checked with the single create's rules
(`svc_gateway.validation.check_withdrawal`), and what a bad row's problems look like."""

from __future__ import annotations

from dataclasses import dataclass

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.batches.csv_file import Row
from svc_gateway.validation import NewWithdrawal, check_withdrawal
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.errors import INVALID_ARGUMENT

GENERIC_REASONS = {
    "recipient_address": "INVALID_ADDRESS",
    "amount": "INVALID_AMOUNT",
    "token": "INVALID_TOKEN",
    "client_reference": "INVALID_CLIENT_REFERENCE",
    "user_ref": "INVALID_USER_REF",
}
"""A row's reason when the single create's is the generic INVALID_ARGUMENT, by column; the
specific ones (UNKNOWN_TOKEN, TOKEN_DISABLED, AMOUNT_ABOVE_MAXIMUM, SYSTEM_ADDRESS) are kept."""
TOO_MANY_FIELDS = "TOO_MANY_FIELDS"
CLIENT_REFERENCE_REUSED = "CLIENT_REFERENCE_REUSED"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: str  # "" for the row as a whole
    reason: str
    message: str
    client_reference: str


def row_request_id(batch_id: str, line: int) -> str:
    """The request_id of a row's withdrawal: derived from the batch and the line, so the row
    can never make a second withdrawal; `/` keeps it apart from every partner's key."""
    return f"batches/{batch_id}/{line}"


def check_row(
    row: Row, batch_id: str, reference: ReferenceData
) -> tuple[NewWithdrawal | None, list[Problem]]:
    """The row's withdrawal, or None and its problems."""
    v = row.values
    ref = v["client_reference"]
    w = withdrawal_pb2.Withdrawal(
        token=v["token"].strip(),
        recipient_address=v["recipient_address"].strip(),
        amount=v["amount"].strip(),
        client_reference=ref,
        user_ref=v["user_ref"].strip(),
    )
    new, found = check_withdrawal(row_request_id(batch_id, row.line), w, reference)
    problems = []
    for violation, reason in found:
        column = violation.field.removeprefix("withdrawal.")
        code = reason.reason
        if reason is INVALID_ARGUMENT:
            code = GENERIC_REASONS.get(column, INVALID_ARGUMENT.reason)
        problems.append(Problem(row.line, column, code, violation.description, ref))
    if row.extra:
        problems.append(
            Problem(row.line, "", TOO_MANY_FIELDS, "has more fields than the header", ref)
        )
    return (None if problems else new), problems
