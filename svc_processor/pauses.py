"""The payout kill switch in the processor (`withdrawal_shared.db.pauses`).

- `Payouts.reserve` calls `check_reservation` first in the transaction that reserves the
  nonce, with the pause lock row locked shared, and raises `PayoutsPaused` (the transaction
  rolls back: no nonce, no payout row) when a pause covers the payout.
- The pipeline reads the pauses without a lock before planning (`paused_now`) only to spare
  chain reads: it holds the withdrawals ON_HOLD `PAUSED` at once; the reservation decides.
- A withdrawal held `PAUSED` goes back to QUEUED once no pause covers it (`is_paused_hold`),
  before it can be placed in a payout: it is never linked to a payout, and so never signed,
  while it is ON_HOLD `PAUSED`.
- The signer refuses a first signature in a paused scope with the reason `PAUSED`; the
  processor then releases the nonce and holds the withdrawals `PAUSED` (`hold_for_refusal`).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.db.pauses import PauseState, payout_pause
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import State

SIGNER_PAUSED = HoldReason.PAUSED.value
"""The signer's ErrorInfo reason when it refuses because of a pause."""


class PayoutsPaused(Exception):
    """A pause covers the payout; nothing was reserved."""

    def __init__(self, pause: PauseState) -> None:
        super().__init__(f"payouts paused ({pause.scope}): {pause.reason}")
        self.pause = pause


def check_reservation(session: Session, chain: str, token_ids: Collection[int]) -> None:
    """Lock the pause row shared and raise `PayoutsPaused` when a pause covers a payout of
    these tokens on `chain`. The first statement of a reservation's transaction."""
    pause = payout_pause(session, chain, token_ids, lock=True)
    if pause is not None:
        raise PayoutsPaused(pause)


def paused_now(session: Session, chain: str, token_id: int) -> PauseState | None:
    """The pause covering the token now, read without a lock (planning only)."""
    return payout_pause(session, chain, (token_id,), lock=False)


def is_paused_hold(row: Withdrawal) -> bool:
    """Whether the row (as read) waits ON_HOLD `PAUSED`."""
    return row.state == State.ON_HOLD and row.state_reason == HoldReason.PAUSED


def detail(pause: PauseState) -> str:
    """The hold message's detail naming the pause."""
    by = f" by {pause.actor}" if pause.actor else ""
    why = f": {pause.reason}" if pause.reason else ""
    return f"Paused ({pause.scope}){by}{why}."


def hold_for_refusal(refused_reason: str) -> HoldReason:
    """The hold of a payout's withdrawals whose signature the signer refused."""
    return HoldReason.PAUSED if refused_reason == SIGNER_PAUSED else HoldReason.SIGNER_REFUSED
