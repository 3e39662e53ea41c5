"""Approvals, transport-neutral: what an operator-facing API calls, with the operator's
identity as a plain string id (it is the audit rows' `actor`).

- `list_pending`: withdrawals waiting PENDING_APPROVAL, with the rule that held them, how
  many approvals they need and who approved so far.
- `approve`: records one operator's approval. One operator counts once (one
  `approval_decisions` row per withdrawal and operator; approving again changes nothing).
  The operator who created the withdrawal (`withdrawals.created_by`) cannot approve it.
  An approval that does not yet reach the number needed is audited as a
  PENDING_APPROVAL -> PENDING_APPROVAL move (reason APPROVAL_RECORDED); the one that reaches
  it moves the withdrawal to QUEUED (reason APPROVED). Both are compare-and-set moves with
  the operator as actor.
- `reject`: any operator (the creator too) rejects a pending withdrawal: REJECTED, reason
  APPROVAL_REJECTED, the operator as actor.
- `expire_pending`: withdrawals undecided for longer than the expiry become REJECTED with
  reason APPROVAL_EXPIRED (the processor's sweeper; idempotent).
- `approval_gaps`: for the signer, which withdrawals needed approvals that are not all
  recorded.

Each call is one database transaction that locks the withdrawal row first (as every other
writer of withdrawals does), so concurrent decisions are counted one after the other. The
`Moved`s returned are for publishing state-change events after the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.approvals.blocklist import check_operator, check_reason
from withdrawal_shared.approvals.errors import NOT_PENDING_APPROVAL, SELF_APPROVAL
from withdrawal_shared.approvals.reasons import ApprovalReason
from withdrawal_shared.approvals.rules import Decision
from withdrawal_shared.db.models import ApprovalDecision, ApprovalRequest, Withdrawal
from withdrawal_shared.db.transitions import Moved, TransitionConflict, move, utcnow
from withdrawal_shared.errors import ApiError, not_found
from withdrawal_shared.states import State

APPROVE = "APPROVE"
REJECT = "REJECT"
# ApprovalRequest.outcome
UNDECIDED = ""
APPROVED = "APPROVED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class PendingApproval:
    """A withdrawal waiting for approval, as an operator needs to see it."""

    withdrawal_id: str
    partner_id: str
    chain: str
    token_id: int
    recipient: str
    amount: int  # base units
    created_by: str | None
    create_time: dt.datetime
    rule_id: int | None
    rule_name: str
    approvals_required: int
    approved_by: tuple[str, ...]  # operators who approved so far, in order
    requested_time: dt.datetime  # when it started waiting


@dataclass(frozen=True)
class ApprovalOutcome:
    """What `approve` or `reject` did."""

    withdrawal_id: str
    state: State  # the withdrawal's state afterwards
    approvals: int  # distinct approvals recorded
    approvals_required: int
    counted: bool  # False when this operator's decision was already recorded
    moved: tuple[Moved, ...]


def new_request(withdrawal_id: str, decision: Decision, now: dt.datetime) -> ApprovalRequest:
    """The approval request row of a withdrawal the rules held (written with its move)."""
    return ApprovalRequest(
        withdrawal_id=withdrawal_id,
        rule_id=decision.rule_id,
        rule_name=decision.rule_name[:96],
        approvals_required=decision.approvals_required,
        create_time=now,
        outcome=UNDECIDED,
        decide_time=None,
    )


def list_pending(
    sessions: sessionmaker[Session], *, limit: int = 100, after: str = ""
) -> list[PendingApproval]:
    """Withdrawals PENDING_APPROVAL in id order (oldest first), `limit` (at most 1000) at a
    time after the withdrawal id `after`."""
    with sessions() as session:
        rows = session.execute(
            select(Withdrawal, ApprovalRequest)
            .join(ApprovalRequest, ApprovalRequest.withdrawal_id == Withdrawal.id)
            .where(
                Withdrawal.state == State.PENDING_APPROVAL.value,
                Withdrawal.id > after,
            )
            .order_by(Withdrawal.id)
            .limit(max(1, min(limit, 1000)))
        ).all()
        approvers = _approvers(session, [w.id for w, _ in rows])
    return [
        PendingApproval(
            withdrawal_id=w.id,
            partner_id=w.partner_id,
            chain=w.chain,
            token_id=w.token_id,
            recipient=w.recipient,
            amount=w.amount,
            created_by=w.created_by,
            create_time=w.create_time,
            rule_id=r.rule_id,
            rule_name=r.rule_name,
            approvals_required=r.approvals_required,
            approved_by=tuple(approvers.get(w.id, [])),
            requested_time=r.create_time,
        )
        for w, r in rows
    ]


def _approvers(session: Session, ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not ids:
        return found
    for withdrawal_id, operator in session.execute(
        select(ApprovalDecision.withdrawal_id, ApprovalDecision.operator_id)
        .where(ApprovalDecision.withdrawal_id.in_(ids), ApprovalDecision.decision == APPROVE)
        .order_by(ApprovalDecision.create_time, ApprovalDecision.operator_id)
    ):
        found.setdefault(withdrawal_id, []).append(operator)
    return found


def _locked(session: Session, withdrawal_id: str) -> tuple[Withdrawal, ApprovalRequest | None]:
    row = session.scalars(
        select(Withdrawal)
        .where(Withdrawal.id == withdrawal_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise not_found(f"withdrawals/{withdrawal_id}")
    request = session.scalars(
        select(ApprovalRequest).where(ApprovalRequest.withdrawal_id == withdrawal_id)
    ).one_or_none()
    return row, request


def _not_pending(row: Withdrawal) -> ApiError:
    return NOT_PENDING_APPROVAL.error(
        f"Withdrawal {row.id} is {row.state}, not waiting for approval; nothing was recorded.",
        metadata={"state": row.state},
    )


def _approvals(session: Session, row: Withdrawal) -> list[str]:
    """Operators whose approval counts (the creator's never does)."""
    return [
        operator
        for operator in _approvers(session, [row.id]).get(row.id, [])
        if operator != row.created_by
    ]


def approve(
    sessions: sessionmaker[Session], withdrawal_id: str, operator_id: str, reason: str = ""
) -> ApprovalOutcome:
    """Record `operator_id`'s approval of a PENDING_APPROVAL withdrawal; QUEUED once the
    rule's number of distinct operators approved. Raises NOT_FOUND, NOT_PENDING_APPROVAL
    (also for an operator who rejected it), SELF_APPROVAL, INVALID_ARGUMENT, or
    TransitionConflict when the withdrawal moved meanwhile (retry)."""
    with sessions.begin() as session:
        return approve_in(session, withdrawal_id, operator_id, reason)


def approve_in(
    session: Session, withdrawal_id: str, operator_id: str, reason: str = ""
) -> ApprovalOutcome:
    """`approve` in the caller's transaction (the admin API commits its audit row with it);
    the caller publishes the `Moved`s after the commit."""
    check_operator(operator_id)
    check_reason(reason)
    row, request = _locked(session, withdrawal_id)
    earlier = session.get(ApprovalDecision, (withdrawal_id, operator_id))
    if earlier is not None and earlier.decision == APPROVE:
        # The same operator again: counted once, whatever became of the withdrawal.
        approvals = _approvals(session, row)
        required = request.approvals_required if request is not None else 0
        return ApprovalOutcome(row.id, State(row.state), len(approvals), required, False, ())
    if row.state != State.PENDING_APPROVAL or request is None or earlier is not None:
        raise _not_pending(row)
    if row.created_by is not None and row.created_by == operator_id:
        raise SELF_APPROVAL.error(
            f"Operator {operator_id} created withdrawal {row.id} and cannot approve it; "
            "another operator must.",
            metadata={"operator_id": operator_id},
        )
    now = utcnow()
    session.add(
        ApprovalDecision(
            withdrawal_id=row.id,
            operator_id=operator_id,
            decision=APPROVE,
            reason=reason,
            create_time=now,
        )
    )
    session.flush()
    approvals = _approvals(session, row)
    required = request.approvals_required
    suffix = f": {reason}" if reason else ""
    if len(approvals) >= required:
        moved = move(
            session,
            row,
            State.QUEUED,
            actor=operator_id,
            reason=ApprovalReason.APPROVED,
            message=f"Approved by {', '.join(approvals)}{suffix}; queued for payment.",
        )
        request.outcome = APPROVED
        request.decide_time = now
    else:
        moved = move(
            session,
            row,
            State.PENDING_APPROVAL,
            actor=operator_id,
            reason=ApprovalReason.APPROVAL_RECORDED,
            message=f"Approval {len(approvals)} of {required} recorded, by "
            f"{operator_id}{suffix}; waiting for {required - len(approvals)} more.",
        )
    return ApprovalOutcome(row.id, moved.to_state, len(approvals), required, True, (moved,))


def reject(
    sessions: sessionmaker[Session], withdrawal_id: str, operator_id: str, reason: str = ""
) -> ApprovalOutcome:
    """Reject a PENDING_APPROVAL withdrawal: REJECTED (reason APPROVAL_REJECTED), audited with
    the operator as actor. Raises NOT_FOUND, NOT_PENDING_APPROVAL, INVALID_ARGUMENT, or
    TransitionConflict when it moved meanwhile (retry)."""
    with sessions.begin() as session:
        return reject_in(session, withdrawal_id, operator_id, reason)


def reject_in(
    session: Session, withdrawal_id: str, operator_id: str, reason: str = ""
) -> ApprovalOutcome:
    """`reject` in the caller's transaction; the caller publishes the `Moved`s after the
    commit."""
    check_operator(operator_id)
    check_reason(reason)
    row, request = _locked(session, withdrawal_id)
    if row.state != State.PENDING_APPROVAL or request is None:
        raise _not_pending(row)
    now = utcnow()
    earlier = session.get(ApprovalDecision, (withdrawal_id, operator_id))
    if earlier is None:
        session.add(
            ApprovalDecision(
                withdrawal_id=row.id,
                operator_id=operator_id,
                decision=REJECT,
                reason=reason,
                create_time=now,
            )
        )
    else:  # approved before, rejects now: the later, safer decision stands
        earlier.decision = REJECT
        earlier.reason = reason
        earlier.create_time = now
    session.flush()
    approvals = _approvals(session, row)
    suffix = f": {reason}" if reason else ""
    moved = move(
        session,
        row,
        State.REJECTED,
        actor=operator_id,
        reason=ApprovalReason.APPROVAL_REJECTED,
        message=f"Rejected by operator {operator_id}{suffix}. Nothing was paid.",
    )
    request.outcome = REJECTED
    request.decide_time = now
    return ApprovalOutcome(
        row.id, State.REJECTED, len(approvals), request.approvals_required, True, (moved,)
    )


def expire_pending(
    sessions: sessionmaker[Session],
    older_than_seconds: float,
    *,
    actor: str,
    limit: int = 500,
) -> list[Moved]:
    """REJECT (reason APPROVAL_EXPIRED) withdrawals waiting for approval longer than
    `older_than_seconds`, oldest first, at most `limit` per call. Idempotent: each is a
    compare-and-set, and a request whose withdrawal left PENDING_APPROVAL otherwise (a
    partner's cancel) is only marked with the state it reached."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    with sessions() as session:
        due = list(
            session.scalars(
                select(ApprovalRequest.withdrawal_id)
                .where(ApprovalRequest.outcome == UNDECIDED, ApprovalRequest.create_time < cutoff)
                .order_by(ApprovalRequest.create_time)
                .limit(limit)
            )
        )
    moved: list[Moved] = []
    for withdrawal_id in due:
        try:
            moved.extend(_expire_one(sessions, withdrawal_id, older_than_seconds, actor))
        except TransitionConflict:
            continue  # decided or cancelled meanwhile; the next sweep looks again
    return moved


def _expire_one(
    sessions: sessionmaker[Session], withdrawal_id: str, seconds: float, actor: str
) -> list[Moved]:
    with sessions.begin() as session:
        row, request = _locked(session, withdrawal_id)
        if request is None or request.outcome != UNDECIDED:
            return []
        now = utcnow()
        if row.state != State.PENDING_APPROVAL:
            request.outcome = row.state[:16]
            request.decide_time = now
            return []
        request.outcome = EXPIRED
        request.decide_time = now
        return [
            move(
                session,
                row,
                State.REJECTED,
                actor=actor,
                reason=ApprovalReason.APPROVAL_EXPIRED,
                message=f"No operator approved it within {seconds:g} s "
                "(PROCESSOR_APPROVAL_EXPIRY_SECONDS); nothing was paid.",
            )
        ]


@dataclass(frozen=True)
class ApprovalGap:
    """A withdrawal that needed `required` approvals and has only `approved`."""

    withdrawal_id: str
    required: int
    approved: int


@dataclass(frozen=True)
class ApprovalTally:
    """A withdrawal's approval request as the signer counts it: how many distinct operators
    other than its creator approved it, how many its rule required, and how it ended
    (`outcome`: "" while undecided, else APPROVED, REJECTED, EXPIRED or the state it left
    for)."""

    withdrawal_id: str
    required: int
    approved: int
    outcome: str


def approval_tallies(session: Session, ids: Collection[str]) -> dict[str, ApprovalTally]:
    """Of the withdrawals `ids`, those with an approval request (ever held for approval), with
    their recorded approvals by distinct operators other than their creator. Three small
    queries; for the signer."""
    if not ids:
        return {}
    requests = {
        r.withdrawal_id: r
        for r in session.scalars(
            select(ApprovalRequest).where(ApprovalRequest.withdrawal_id.in_(sorted(ids)))
        )
    }
    if not requests:
        return {}
    creators: dict[str, str | None] = {
        withdrawal_id: creator
        for withdrawal_id, creator in session.execute(
            select(Withdrawal.id, Withdrawal.created_by).where(Withdrawal.id.in_(list(requests)))
        )
    }
    counts: dict[str, int] = {}
    for withdrawal_id, operator in session.execute(
        select(ApprovalDecision.withdrawal_id, ApprovalDecision.operator_id).where(
            ApprovalDecision.withdrawal_id.in_(list(requests)),
            ApprovalDecision.decision == APPROVE,
        )
    ):
        if operator != creators.get(withdrawal_id):
            counts[withdrawal_id] = counts.get(withdrawal_id, 0) + 1
    return {
        withdrawal_id: ApprovalTally(
            withdrawal_id, request.approvals_required, counts.get(withdrawal_id, 0), request.outcome
        )
        for withdrawal_id, request in requests.items()
    }


def approval_gaps(session: Session, ids: Collection[str]) -> dict[str, ApprovalGap]:
    """Of the withdrawals `ids`, those held for approval whose recorded approvals (by
    distinct operators other than their creator) are fewer than their rule required, or
    whose request ended other than APPROVED. Three small queries; for the signer."""
    return {
        withdrawal_id: ApprovalGap(withdrawal_id, tally.required, tally.approved)
        for withdrawal_id, tally in approval_tallies(session, ids).items()
        if tally.approved < tally.required or tally.outcome != APPROVED
    }
