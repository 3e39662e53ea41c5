"""The payout kill switch in the signer, defence in depth behind the processor's own check.

The signer reads the pauses itself from the database (`withdrawal_shared.db.pauses`), in the
transaction of the signing request, after locking the pause row shared (before it locks the
withdrawals: the lock order every reserver and signer keeps). While a pause covers the
request's chain or one of its tokens it refuses (`PAUSED`) to sign a payout for the first
time. It still signs, so that what is already out is followed and no nonce jams:

- a repeated request (the stored bytes are returned before this check);
- a replacement at the same (wallet, nonce) paying exactly the withdrawals of a transaction
  it already signed there (higher fees; it pays nothing new: one transaction per nonce);
- a nonce release (a zero-value self-transfer; it is never checked against pauses).

Independently of any pause, it never signs for a withdrawal ON_HOLD `PAUSED` (the processor
queues such a withdrawal again before placing it in a payout).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import Token, Withdrawal
from withdrawal_shared.db.pauses import PauseState, payout_pause
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import State


def lock_and_read(
    session: Session, chain: str, token_addresses: Iterable[str]
) -> PauseState | None:
    """The pause covering a payout on `chain` through these token contracts (lowercase), the
    pause row locked shared until the transaction ends; None when none does."""
    wanted = {address.lower() for address in token_addresses}
    token_ids = [
        token_id
        for token_id, address in session.execute(
            select(Token.id, Token.contract_address).where(Token.chain == chain)
        )
        if address and address.lower() in wanted
    ]
    return payout_pause(session, chain, token_ids, lock=True)


def paused_holds(session: Session, withdrawal_ids: Collection[str]) -> list[str]:
    """The ids among these of withdrawals ON_HOLD `PAUSED` (sorted)."""
    if not withdrawal_ids:
        return []
    return sorted(
        session.scalars(
            select(Withdrawal.id).where(
                Withdrawal.id.in_(sorted(withdrawal_ids)),
                Withdrawal.state == State.ON_HOLD.value,
                Withdrawal.state_reason == HoldReason.PAUSED.value,
            )
        )
    )
