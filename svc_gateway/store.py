"""The gateway's database work, synchronous (run on the core's thread pool)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.db import api_keys
from withdrawal_shared.db.engine import make_sessionmaker
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ReferenceCache
from withdrawal_shared.db.transitions import (
    Moved,
    TransitionConflict,
    move,
    record_creation,
    utcnow,
)
from withdrawal_shared.errors import ApiError, Code
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.states import CANCELLABLE, State

ACTOR_PARTNER = "partner:"


class WithdrawalStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        self.reference = ReferenceCache(self.sessions)

    def partner_for_token(self, token: str) -> str | None:
        with self.sessions() as session:
            return api_keys.partner_for_token(session, token)

    def create(self, partner_id: str, new: NewWithdrawal) -> tuple[Withdrawal, Moved | None]:
        """Insert the withdrawal (RECEIVED, audited); on a repeated request_id return the
        original and None. Raises ALREADY_EXISTS when the repeat's body differs."""
        now = utcnow()
        row = Withdrawal(
            id=new_ulid(),
            partner_id=partner_id,
            request_id=new.request_id,
            request_fingerprint=new.fingerprint,
            client_reference=new.client_reference,
            chain=new.chain,
            token_id=new.token.id,
            recipient=new.recipient,
            amount=new.amount,
            priority=new.priority.value,
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
        try:
            with self.sessions.begin() as session:
                moved = record_creation(session, row, actor=ACTOR_PARTNER + partner_id)
            return row, moved
        except IntegrityError:
            pass
        with self.sessions() as session:
            existing = session.scalar(
                select(Withdrawal).where(
                    Withdrawal.partner_id == partner_id,
                    Withdrawal.request_id == new.request_id,
                )
            )
        if existing is None:  # the conflict was not the idempotency key: a real fault
            raise RuntimeError("insert failed on a constraint other than the idempotency key")
        if existing.request_fingerprint != new.fingerprint:
            raise ApiError(
                Code.ALREADY_EXISTS,
                "IDEMPOTENCY_KEY_REUSED",
                f"request_id {new.request_id!r} was already used for a different withdrawal "
                f"({existing.id}); use a new request_id for a new withdrawal.",
                metadata={"withdrawal": "withdrawals/" + existing.id},
            )
        return existing, None

    def get(self, partner_id: str, withdrawal_id: str) -> Withdrawal | None:
        with self.sessions() as session:
            return session.scalar(
                select(Withdrawal).where(
                    Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                )
            )

    def list(
        self,
        partner_id: str,
        *,
        states: frozenset[State],
        client_reference: str | None,
        after_id: str | None,
        limit: int,
    ) -> Sequence[Withdrawal]:
        query = select(Withdrawal).where(Withdrawal.partner_id == partner_id)
        if states:
            query = query.where(Withdrawal.state.in_(sorted(s.value for s in states)))
        if client_reference is not None:
            query = query.where(Withdrawal.client_reference == client_reference)
        if after_id is not None:
            query = query.where(Withdrawal.id < after_id)
        query = query.order_by(Withdrawal.id.desc()).limit(limit)
        with self.sessions() as session:
            return session.scalars(query).all()

    def cancel(
        self, partner_id: str, withdrawal_id: str, reason: str
    ) -> tuple[Withdrawal | None, Moved | None]:
        """Cancel if still cancellable; (None, None) when not found; the unchanged row and
        None when already cancelled. Raises FAILED_PRECONDITION once signing started."""
        for _ in range(5):
            with self.sessions.begin() as session:
                row = session.scalar(
                    select(Withdrawal).where(
                        Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                    )
                )
                if row is None:
                    return None, None
                if row.state == State.CANCELLED:
                    return row, None
                # Not once it was placed in a payout: a transaction carrying its payout number
                # may still be mined, so it could be paid after a cancel.
                placed = row.payout_tx_id is not None or row.payout_number is not None
                if State(row.state) not in CANCELLABLE or placed:
                    raise ApiError(
                        Code.FAILED_PRECONDITION,
                        "WITHDRAWAL_NOT_CANCELLABLE",
                        f"The withdrawal is {row.state} and can no longer be cancelled: "
                        "only withdrawals not yet signed can be.",
                        metadata={"state": row.state},
                    )
                try:
                    moved = move(
                        session,
                        row,
                        State.CANCELLED,
                        actor=ACTOR_PARTNER + partner_id,
                        reason="CANCELLED_BY_PARTNER",
                        message=reason or "Cancelled by the partner.",
                        # Not once the processor has placed it in a payout meanwhile.
                        where=[
                            Withdrawal.payout_tx_id.is_(None),
                            Withdrawal.payout_number.is_(None),
                        ],
                    )
                except TransitionConflict:
                    continue  # it moved under us: read it again and decide again
                return row, moved
        raise ApiError(
            Code.ABORTED,
            "CONCURRENT_MODIFICATION",
            "The withdrawal kept changing while cancelling; retry the request.",
        )

    def events_after(
        self, partner_id: str, withdrawal_id: str, version: int
    ) -> tuple[Withdrawal | None, Sequence[WithdrawalAudit]]:
        """The current row and its audit rows with a version above `version`, in order."""
        with self.sessions() as session:
            row = session.scalar(
                select(Withdrawal).where(
                    Withdrawal.id == withdrawal_id, Withdrawal.partner_id == partner_id
                )
            )
            if row is None:
                return None, ()
            audits = session.scalars(
                select(WithdrawalAudit)
                .where(
                    WithdrawalAudit.withdrawal_id == withdrawal_id,
                    WithdrawalAudit.version > version,
                )
                .order_by(WithdrawalAudit.version)
            ).all()
            return row, audits
