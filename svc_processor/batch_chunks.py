"""The withdrawals a batch chunk's task stands for (see `svc_processor.consumer`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.states import State


def received_in_chunk(
    sessions: sessionmaker[Session], batch_id: str, first_line: int, last_line: int
) -> list[str]:
    """The ids of the batch's withdrawals of lines first..last still RECEIVED, in line order
    (through the index on (batch_id, batch_line))."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Withdrawal.id)
                .where(
                    Withdrawal.batch_id == batch_id,
                    Withdrawal.batch_line.between(first_line, last_line),
                    Withdrawal.state == State.RECEIVED.value,
                )
                .order_by(Withdrawal.batch_line)
            )
        )
