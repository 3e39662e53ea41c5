"""The withdrawal lifecycle: states, which moves are allowed, and which states end it."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class State(enum.StrEnum):
    """Stored as these strings; the API's enum is `STATE_` + the name."""

    RECEIVED = "RECEIVED"
    VALIDATED = "VALIDATED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    QUEUED = "QUEUED"
    SIGNED = "SIGNED"
    BROADCAST = "BROADCAST"
    CONFIRMING = "CONFIRMING"
    COMPLETED = "COMPLETED"
    ON_HOLD = "ON_HOLD"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class Priority(enum.StrEnum):
    STANDARD = "STANDARD"
    PRIORITY = "PRIORITY"
    EMERGENCY = "EMERGENCY"


PRIORITIES = (Priority.EMERGENCY, Priority.PRIORITY, Priority.STANDARD)
"""Every priority, the most urgent first."""
URGENCY: dict[str, int] = {Priority.EMERGENCY: 0, Priority.PRIORITY: 1, Priority.STANDARD: 2}
"""Sort key of a stored priority: the most urgent first (an unknown one counts as STANDARD)."""


def most_urgent(priorities: Iterable[str]) -> Priority:
    """The most urgent of the priorities (STANDARD when there are none)."""
    return Priority(min(priorities, key=lambda p: URGENCY.get(p, 2), default=Priority.STANDARD))


class WalletRole(enum.StrEnum):
    """`hot_wallets.role`: a STANDARD wallet pays STANDARD and PRIORITY withdrawals (and
    EMERGENCY ones while no EMERGENCY wallet is enabled); an EMERGENCY wallet pays only
    EMERGENCY withdrawals."""

    STANDARD = "STANDARD"
    EMERGENCY = "EMERGENCY"


class WalletState(enum.StrEnum):
    """`hot_wallets.state`: only ACTIVE wallets are picked for new payouts; a PENDING one (a
    rotation's new wallet) is not yet paying; a DRAINING one (a rotation's old wallet) finishes
    its in-flight payouts (replacements, nonce releases, resumption); RETIRED: its key is
    retired in the signer (`svc_processor.rotation`)."""

    ACTIVE = "ACTIVE"
    PENDING = "PENDING"
    DRAINING = "DRAINING"
    RETIRED = "RETIRED"


class PayoutState(enum.StrEnum):
    """`payout_transactions.state`: RESERVED (nonce taken, not yet signed) -> SIGNED (bytes
    stored, maybe not sent) -> BROADCAST -> MINED -> CONFIRMED, or REVERTED; REPLACED and
    DROPPED end a transaction whose nonce another one took."""

    RESERVED = "RESERVED"
    SIGNED = "SIGNED"
    BROADCAST = "BROADCAST"
    MINED = "MINED"
    CONFIRMED = "CONFIRMED"
    REVERTED = "REVERTED"
    REPLACED = "REPLACED"
    DROPPED = "DROPPED"


TERMINAL = frozenset({State.COMPLETED, State.REJECTED, State.CANCELLED, State.FAILED})

# A partner may cancel only before the withdrawal is signed (and only if no transaction
# was ever assigned to it; ON_HOLD after signing is not cancellable).
CANCELLABLE = frozenset(
    {State.RECEIVED, State.VALIDATED, State.PENDING_APPROVAL, State.QUEUED, State.ON_HOLD}
)

ALLOWED: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset(
        {State.VALIDATED, State.REJECTED, State.CANCELLED, State.ON_HOLD, State.QUEUED}
    ),
    State.VALIDATED: frozenset(
        {State.PENDING_APPROVAL, State.QUEUED, State.REJECTED, State.CANCELLED, State.ON_HOLD}
    ),
    # PENDING_APPROVAL -> PENDING_APPROVAL: an operator's approval recorded while more are
    # needed (the audit row names the operator).
    State.PENDING_APPROVAL: frozenset(
        {State.PENDING_APPROVAL, State.QUEUED, State.REJECTED, State.CANCELLED, State.ON_HOLD}
    ),
    State.QUEUED: frozenset({State.SIGNED, State.CANCELLED, State.ON_HOLD, State.REJECTED}),
    State.SIGNED: frozenset({State.BROADCAST, State.ON_HOLD, State.FAILED, State.CONFIRMING}),
    State.BROADCAST: frozenset(
        {State.CONFIRMING, State.SIGNED, State.ON_HOLD, State.FAILED, State.COMPLETED}
    ),
    # ON_HOLD from CONFIRMING: an item the payout vault could not pay (nothing was paid).
    State.CONFIRMING: frozenset({State.COMPLETED, State.BROADCAST, State.FAILED, State.ON_HOLD}),
    # ON_HOLD -> ON_HOLD: still waiting, for another reason (e.g. a reverted payout's retry
    # finds the token paused); the audit row records the new reason.
    State.ON_HOLD: frozenset(
        {
            State.ON_HOLD,
            State.RECEIVED,
            State.VALIDATED,
            State.QUEUED,
            State.SIGNED,
            State.BROADCAST,
            State.CANCELLED,
            State.REJECTED,
            State.FAILED,
        }
    ),
    State.COMPLETED: frozenset(),
    State.REJECTED: frozenset(),
    State.CANCELLED: frozenset(),
    State.FAILED: frozenset(),
}


def can_move(current: State, target: State) -> bool:
    return target in ALLOWED[current]
