"""Withdrawal rows for tests that start below the gateway: built through the models and moved
with `transitions` exactly as the services do (audit rows included)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from withdrawal_shared.db.models import PayoutItem, PayoutTransaction, Withdrawal
from withdrawal_shared.db.transitions import move, record_creation, utcnow
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import State


def add_withdrawal(
    session: Session,
    *,
    partner_id: str,
    token_id: int,
    recipient: str,
    amount: int,
    actor: str = "test",
    to: State = State.RECEIVED,
) -> str:
    """A new withdrawal (RECEIVED), moved on through VALIDATED and QUEUED to `to` when asked."""
    now = utcnow()
    row = Withdrawal(
        id=new_ulid(),
        partner_id=partner_id,
        request_id=secrets.token_hex(8),
        request_fingerprint=secrets.token_hex(32),
        client_reference="",
        chain="polygon",
        token_id=token_id,
        recipient=recipient.lower(),
        amount=amount,
        priority="STANDARD",
        state=State.RECEIVED.value,
        state_reason="",
        state_message="Accepted; waiting for the processor.",
        tx_hash=None,
        fee_wei=None,
        confirmations=0,
        create_time=now,
        update_time=now,
        end_time=None,
    )
    record_creation(session, row, actor=actor)
    if to == State.RECEIVED:
        return row.id
    move(session, row, State.VALIDATED, actor=actor, reason="VALIDATED")
    move(session, row, State.QUEUED, actor=actor, reason="QUEUED")
    if to not in (State.VALIDATED, State.QUEUED):
        move(session, row, to, actor=actor, reason=to.value)
    return row.id


def payouts_paying(session: Session, withdrawal_id: str) -> list[PayoutTransaction]:
    """Every payout row paying the withdrawal (an item of it), oldest first."""
    return list(
        session.scalars(
            select(PayoutTransaction)
            .join(PayoutItem, PayoutItem.payout_tx_id == PayoutTransaction.id)
            .where(PayoutItem.withdrawal_id == withdrawal_id)
            .order_by(PayoutTransaction.create_time, PayoutTransaction.id)
        )
    )
