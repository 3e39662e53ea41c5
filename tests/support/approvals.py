"""Withdrawals held for manual approval, made as the processor makes them: a RECEIVED row
screened by the approval rules (`svc_processor.screening`), which moves it to
PENDING_APPROVAL with its `approval_requests` row."""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from svc_processor.pipeline import _refusal
from svc_processor.screening import Screening
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.models import Token, Withdrawal
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.states import State

USDC = 10**6


def held_withdrawal(
    sessions: sessionmaker[Session],
    partner_id: str,
    amount: int = 200_000 * USDC,
    *,
    created_by: str | None = None,
) -> str:
    """A withdrawal PENDING_APPROVAL; 200,000 USDC needs two approvals under the shipped
    rules (`default`), 20,000 one."""
    with sessions.begin() as session:
        ensure_partner(session, partner_id)
        session.flush()
        token = session.scalars(
            select(Token).where(Token.chain == "polygon", Token.symbol == "USDC")
        ).one()
        recipient = "0x" + secrets.token_hex(20)
        withdrawal_id = add_withdrawal(
            session, partner_id=partner_id, token_id=token.id, recipient=recipient, amount=amount
        )
        if created_by is not None:
            session.execute(
                update(Withdrawal)
                .where(Withdrawal.id == withdrawal_id)
                .values(created_by=created_by)
            )
    assert hold(sessions, [withdrawal_id]) == [withdrawal_id]
    return withdrawal_id


def hold(sessions: sessionmaker[Session], ids: list[str]) -> list[str]:
    """Screen RECEIVED withdrawals as the processor does: the ones a rule holds become
    PENDING_APPROVAL (returned), the others stay as they are."""
    with sessions.begin() as session:
        reference = ReferenceData.load(session)
        rows = list(session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))))
        screening = Screening(manual=False)
        plan = screening.sort(session, rows, reference, _refusal)
        screening.hold(session, plan.pending, plan.verdicts)
    with sessions() as session:
        return sorted(
            session.scalars(
                select(Withdrawal.id).where(
                    Withdrawal.id.in_(ids), Withdrawal.state == State.PENDING_APPROVAL.value
                )
            )
        )
