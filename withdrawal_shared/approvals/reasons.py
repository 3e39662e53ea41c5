"""The `state_reason`s (and their messages) that approvals and screening write."""

from __future__ import annotations

import enum


class ApprovalReason(enum.StrEnum):
    # RECEIVED/VALIDATED -> PENDING_APPROVAL: a rule wants operators' approvals.
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    # PENDING_APPROVAL -> PENDING_APPROVAL: an approval was recorded; more are needed.
    APPROVAL_RECORDED = "APPROVAL_RECORDED"
    # PENDING_APPROVAL -> QUEUED: the last approval needed was recorded.
    APPROVED = "APPROVED"
    # PENDING_APPROVAL -> REJECTED: an operator rejected it.
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    # PENDING_APPROVAL -> REJECTED: nobody decided within PROCESSOR_APPROVAL_EXPIRY_SECONDS.
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    # -> REJECTED: the first matching approval rule says REJECT.
    APPROVAL_RULE_REJECTED = "APPROVAL_RULE_REJECTED"
    # -> REJECTED: the recipient is on the blocklist (at validation or when planning a payout).
    ADDRESS_BLOCKED = "ADDRESS_BLOCKED"


def pending_message(rule_name: str, approvals_required: int) -> str:
    return (
        f"Waiting for {approvals_required} operator approval(s) (rule {rule_name}); nothing is "
        "paid before."
    )


def rule_rejected_message(rule_name: str) -> str:
    return f"Refused by the approval rule {rule_name}; nothing was paid."


BLOCKED_MESSAGE = (
    "The recipient address is on the blocklist (sanctions screening); nothing was paid and "
    "nothing will be paid to it."
)
