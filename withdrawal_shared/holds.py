"""Every reason a withdrawal can wait ON_HOLD, what it means, and what an operator does.

`HoldReason` is the one list of the reasons the services set (the stored `state_reason` is
the member's value). For each, `HOLDS` holds the operator-facing meaning, the operator's
action, and whether the processor resumes the withdrawal by itself once the condition is gone
(`RESUMABLE`: the processor's sweeper and batcher pick those up again; any other hold stays
until an operator acts).

`HoldReason.state_message(detail)` is the `state_message` a withdrawal gets when it is moved
ON_HOLD, the text the API shows: the meaning, the details of this withdrawal, the action.
`operations_table()` renders the table of docs/operations.md (`scripts/gen_docs.py` writes it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

STATE_MESSAGE_MAX = 512
"""Length of the `withdrawals.state_message` column; longer messages are cut to it."""


class HoldReason(enum.StrEnum):
    """Why a withdrawal waits ON_HOLD; the value is the stored `state_reason`."""

    INSUFFICIENT_HOT_WALLET_FUNDS = "INSUFFICIENT_HOT_WALLET_FUNDS"
    INSUFFICIENT_VAULT_FUNDS = "INSUFFICIENT_VAULT_FUNDS"
    TRANSFER_WOULD_REVERT = "TRANSFER_WOULD_REVERT"
    PAYOUT_WOULD_REVERT = "PAYOUT_WOULD_REVERT"
    FEES_ABOVE_CAP = "FEES_ABOVE_CAP"
    OUTFLOW_CAP_REACHED = "OUTFLOW_CAP_REACHED"
    PAYOUT_REVERTED = "PAYOUT_REVERTED"
    PAYOUT_ITEM_FAILED = "PAYOUT_ITEM_FAILED"
    ALREADY_PAID_ELSEWHERE = "ALREADY_PAID_ELSEWHERE"
    SIGNER_REFUSED = "SIGNER_REFUSED"
    DEAD_LETTERED = "DEAD_LETTERED"
    PAUSED = "PAUSED"
    SAFE_APPROVALS_MISSING = "SAFE_APPROVALS_MISSING"

    @property
    def meaning(self) -> str:
        """What the hold means, for an operator (and the partner reading the API)."""
        return HOLDS[self].meaning

    @property
    def action(self) -> str:
        """What an operator does about it."""
        return HOLDS[self].action

    @property
    def resumes(self) -> bool:
        """True when the processor resumes the withdrawal by itself."""
        return HOLDS[self].resumes

    def state_message(self, detail: str = "") -> str:
        """The `state_message` of a withdrawal moved ON_HOLD for this reason: the meaning,
        then `detail` (what happened to this withdrawal), then the action. `detail` is cut
        so that the whole fits the column with the meaning and the action intact."""
        hold = HOLDS[self]
        room = STATE_MESSAGE_MAX - len(hold.meaning) - len(hold.action) - 2
        detail = detail.strip()
        if len(detail) > room:
            detail = detail[: max(0, room - 3)].rstrip() + "..."
        return " ".join(part for part in (hold.meaning, detail, hold.action) if part)


@dataclass(frozen=True)
class Hold:
    """What a hold reason means, what an operator does, and whether it resumes by itself."""

    meaning: str
    action: str
    resumes: bool


_NO_RELEASE = "No service releases this hold."

HOLDS: Mapping[HoldReason, Hold] = {
    HoldReason.INSUFFICIENT_HOT_WALLET_FUNDS: Hold(
        meaning="The hot wallet lacks the token or the gas to pay it; nothing was paid.",
        action="Fund the hot wallet (token for direct transfers, native currency for gas); "
        "it resumes by itself once the wallet can pay.",
        resumes=True,
    ),
    HoldReason.INSUFFICIENT_VAULT_FUNDS: Hold(
        meaning="The payout vault holds too little of the token to pay it; nothing was paid.",
        action="Have the treasury fund the vault; it resumes by itself once the vault holds "
        "enough.",
        resumes=True,
    ),
    HoldReason.TRANSFER_WOULD_REVERT: Hold(
        meaning="The token refuses the transfer now (paused, or the recipient is blocked); "
        "nothing was paid.",
        action="Ask the token's issuer why; it resumes by itself once the transfer would succeed.",
        resumes=True,
    ),
    HoldReason.PAYOUT_WOULD_REVERT: Hold(
        meaning="The payout vault refuses the payout now (it or the token is paused, or the "
        "hot wallet is not its operator); nothing was paid.",
        action="Check the pauses and the vault's operators; it resumes by itself once the "
        "payout would succeed.",
        resumes=True,
    ),
    HoldReason.FEES_ABOVE_CAP: Hold(
        meaning="Network fees are above the chain's fee cap; nothing was paid.",
        action="Wait, or raise the chain's fee cap; it resumes by itself once the fees fit "
        "under the cap.",
        resumes=True,
    ),
    HoldReason.OUTFLOW_CAP_REACHED: Hold(
        meaning="The payout vault's outflow cap for the token in this window is used up; "
        "nothing was paid.",
        action="Nothing, or have a vault owner raise the cap; it resumes by itself when the "
        "window allows.",
        resumes=True,
    ),
    HoldReason.PAYOUT_REVERTED: Hold(
        meaning="The payout transaction reverted: nothing was paid, only its gas was spent.",
        action="Read the revert reason (a paused token or a blocked recipient is for the "
        "issuer); it is paid again by itself once it would succeed.",
        resumes=True,
    ),
    HoldReason.PAYOUT_ITEM_FAILED: Hold(
        meaning="The payout vault could not pay it in a batch (the token reverted or returned "
        "false) while it paid the others; nothing was paid for it.",
        action="Review the recipient and the token with the failure reason. " + _NO_RELEASE,
        resumes=False,
    ),
    HoldReason.ALREADY_PAID_ELSEWHERE: Hold(
        meaning="The payout vault reports its payout number as already paid, but no payout "
        "known here paid it; nothing more will be paid.",
        action="Reconcile the vault's events on chain with the payout rows. " + _NO_RELEASE,
        resumes=False,
    ),
    HoldReason.SIGNER_REFUSED: Hold(
        meaning="The signer refused to sign the payout; nothing was paid, and the nonce was "
        "released with a zero-value self-transfer.",
        action="Review the signer's refusal reason against its policy. " + _NO_RELEASE,
        resumes=False,
    ),
    HoldReason.DEAD_LETTERED: Hold(
        meaning="The processor gave up on this withdrawal's task after repeated deliveries; "
        "nothing was paid.",
        action="An operator must look: read the last error and the task in the dead-letter "
        "stream `<prefix>tasks:dead`, then fix the cause. " + _NO_RELEASE,
        resumes=False,
    ),
    HoldReason.PAUSED: Hold(
        meaning="Payouts of its chain or token are paused by the kill switch; nothing was paid.",
        action="Resume the pause when it is safe (it is listed in `payout_pauses`); it "
        "resumes by itself once no pause covers it.",
        resumes=True,
    ),
    HoldReason.SAFE_APPROVALS_MISSING: Hold(
        meaning="Above its token's Safe threshold (a threshold changed after its approval), "
        "it has fewer approvals than the treasury Safe needs; nothing was paid.",
        action="Reject it, or restore the thresholds it was approved under. " + _NO_RELEASE,
        resumes=False,
    ),
}

RESUMABLE = frozenset(reason for reason in HoldReason if HOLDS[reason].resumes)
"""The holds the processor resumes by itself once the condition is gone."""

TABLE_HEADING = "## ON_HOLD reasons"


def operations_table() -> str:
    """The `## ON_HOLD reasons` section of docs/operations.md, from `HOLDS`."""
    lines = [
        TABLE_HEADING,
        "",
        "Generated from `withdrawal_shared/holds.py` by `scripts/gen_docs.py`: edit the "
        "registry, then run the script. Where the action says it resumes by itself, the "
        "processor picks the withdrawal up again once the condition is gone; any other hold "
        "stays until an operator acts.",
        "",
        "| reason | what it means | what an operator does |",
        "| --- | --- | --- |",
    ]
    for reason in HoldReason:
        hold = HOLDS[reason]
        lines.append(f"| `{reason.value}` | {_cell(hold.meaning)} | {_cell(hold.action)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _check_registry() -> None:
    missing = [reason.value for reason in HoldReason if reason not in HOLDS]
    if missing:
        raise RuntimeError(f"hold reasons without an entry in HOLDS: {missing}")


_check_registry()
