"""What the processor does with approval rules and the blocklist.

`Screening.decide` runs inside the consumer's validating transaction for a whole batch: it
reads the enabled rules once, the blocked recipients among the batch in one query, and the
facts the rules use (`withdrawal_shared.approvals.facts`, none when no rule needs them), then
decides each withdrawal in memory: REJECTED (ADDRESS_BLOCKED, or a REJECT rule), QUEUED
(AUTO_APPROVE), or PENDING_APPROVAL with an `approval_requests` row (the rule and the number
of approvals needed), written in the same transaction as the move. A withdrawal above its
token's Safe threshold on a chain with a treasury Safe (`svc_processor.safe_payouts`) needs at
least the Safe's threshold of approvals whatever the rule said (the larger of the two; a REJECT
stays a REJECT).

`Screening.reject_blocked` runs again when a payout is planned: a withdrawal whose recipient
was blocked after its validation is REJECTED (ADDRESS_BLOCKED) before any nonce is reserved
for it. The signer refuses a blocked recipient too, for a block added after the planning.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from svc_processor.safe_payouts import safe_approvals_required
from withdrawal_shared.approvals.blocklist import blocked_among
from withdrawal_shared.approvals.core import new_request
from withdrawal_shared.approvals.facts import contexts
from withdrawal_shared.approvals.reasons import (
    BLOCKED_MESSAGE,
    ApprovalReason,
    pending_message,
    rule_rejected_message,
)
from withdrawal_shared.approvals.rules import Action, Decision, load_rules
from withdrawal_shared.db.models import ApprovalRequest, Withdrawal
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.db.transitions import (
    Moved,
    Step,
    TransitionConflict,
    move,
    move_many,
    utcnow,
)
from withdrawal_shared.states import State

ACTOR = "processor"
VALIDATED = Step(State.VALIDATED, "VALIDATED")
QUEUED = Step(State.QUEUED, "QUEUED")


@dataclass(frozen=True)
class Verdict:
    """One withdrawal's fate: `refusal` (reason, message) when REJECTED, else `decision`."""

    refusal: tuple[str, str] | None
    decision: Decision | None = None

    @property
    def pending(self) -> bool:
        return self.decision is not None and self.decision.action is Action.REQUIRE_APPROVALS


@dataclass
class Sorted:
    """A consumer batch sorted by what becomes of each row (see `Screening.sort`)."""

    valid: list[Withdrawal] = field(default_factory=list)  # RECEIVED -> QUEUED
    validated: list[Withdrawal] = field(default_factory=list)  # VALIDATED -> QUEUED
    pending: list[Withdrawal] = field(default_factory=list)  # -> PENDING_APPROVAL
    rejected: dict[tuple[str, str], list[Withdrawal]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (reason, message) -> rows to REJECT
    verdicts: dict[str, Verdict] = field(default_factory=dict)


Refusal = Callable[[Withdrawal, ReferenceData], "tuple[str, str] | None"]


def with_safe_approvals(decision: Decision, required: int) -> Decision:
    """`decision` for a withdrawal the treasury Safe pays: at least `required` approvals."""
    if decision.action is Action.REQUIRE_APPROVALS and decision.approvals_required >= required:
        return decision
    return Decision(
        Action.REQUIRE_APPROVALS,
        max(required, decision.approvals_required),
        decision.rule_id,
        f"{decision.rule_name} (treasury Safe: {required} approvals)"[:96],
    )


class Screening:
    def __init__(self, *, manual: bool) -> None:
        self.manual = manual

    def sort(
        self,
        session: Session,
        rows: Sequence[Withdrawal],
        reference: ReferenceData,
        refusal: Refusal,
    ) -> Sorted:
        """Sort the RECEIVED and VALIDATED `rows` (others are left out): RECEIVED ones
        `refusal` refuses (the reference-data checks) are REJECTED; the rest are decided by
        `decide`."""
        plan = Sorted()
        candidates: list[Withdrawal] = []
        for row in rows:
            if row.state == State.RECEIVED:
                refused = refusal(row, reference)
                if refused is not None:
                    plan.rejected[refused].append(row)
                    continue
            if row.state in (State.RECEIVED, State.VALIDATED):
                candidates.append(row)
        plan.verdicts = self.decide(session, candidates, reference)
        for row in candidates:
            verdict = plan.verdicts[row.id]
            if verdict.refusal is not None:
                plan.rejected[verdict.refusal].append(row)
            elif verdict.pending:
                plan.pending.append(row)
            elif row.state == State.RECEIVED:
                plan.valid.append(row)
            else:
                plan.validated.append(row)
        return plan

    def decide(
        self, session: Session, rows: Sequence[Withdrawal], reference: ReferenceData
    ) -> dict[str, Verdict]:
        """The verdict of each row (already valid against the reference data)."""
        if not rows:
            return {}
        blocked = blocked_among(session, {row.recipient for row in rows})
        rules = load_rules(session)
        symbols = {token_id: t.symbol for token_id, t in reference.tokens_by_id.items()}
        facts = contexts(session, [r for r in rows if r.recipient not in blocked], rules, symbols)
        safe_required = safe_approvals_required(session, rows)
        verdicts: dict[str, Verdict] = {}
        for row in rows:
            if row.recipient in blocked:
                verdicts[row.id] = Verdict((ApprovalReason.ADDRESS_BLOCKED, BLOCKED_MESSAGE))
                continue
            decision = rules.evaluate(facts[row.id], manual=self.manual)
            if decision.action is Action.REJECT:
                refusal = (
                    ApprovalReason.APPROVAL_RULE_REJECTED.value,
                    rule_rejected_message(decision.rule_name),
                )
                verdicts[row.id] = Verdict(refusal, decision)
            else:
                required = safe_required.get(row.id)
                if required is not None:
                    decision = with_safe_approvals(decision, required)
                verdicts[row.id] = Verdict(None, decision)
        return verdicts

    def hold(
        self, session: Session, rows: Sequence[Withdrawal], verdicts: dict[str, Verdict]
    ) -> list[Moved]:
        """Move `rows` (RECEIVED or VALIDATED, all with a pending verdict) to
        PENDING_APPROVAL and write their approval requests, in `session`'s transaction.
        Raises TransitionConflict like `move_many`."""
        groups: dict[tuple[State, str, int], list[Withdrawal]] = defaultdict(list)
        for row in rows:
            decision = verdicts[row.id].decision
            assert decision is not None
            groups[(State(row.state), decision.rule_name, decision.approvals_required)].append(row)
        if not rows:
            return []
        moved: list[Moved] = []
        for (state, rule_name, required), group in groups.items():
            hold = Step(
                State.PENDING_APPROVAL,
                ApprovalReason.APPROVAL_REQUIRED,
                pending_message(rule_name, required),
            )
            path = (VALIDATED, hold) if state == State.RECEIVED else (hold,)
            moved += move_many(session, group, path, actor=ACTOR)
        now = utcnow()
        # A withdrawal held once before (and back from an operator's hold) gets a new request.
        session.execute(
            delete(ApprovalRequest).where(ApprovalRequest.withdrawal_id.in_([r.id for r in rows]))
        )
        for row in rows:
            decision = verdicts[row.id].decision
            assert decision is not None
            session.add(new_request(row.id, decision, now))
        return moved

    def settle_one(self, session: Session, row: Withdrawal, reference: ReferenceData) -> Moved:
        """Decide one VALIDATED row and move it (QUEUED, PENDING_APPROVAL or REJECTED)."""
        verdict = self.decide(session, [row], reference)[row.id]
        if verdict.refusal is not None:
            reason, message = verdict.refusal
            return move(session, row, State.REJECTED, actor=ACTOR, reason=reason, message=message)
        if verdict.pending:
            return self.hold(session, [row], {row.id: verdict})[-1]
        return move(session, row, State.QUEUED, actor=ACTOR, reason="QUEUED")

    @staticmethod
    def reject_blocked(
        sessions: sessionmaker[Session], rows: Sequence[Withdrawal]
    ) -> tuple[list[Withdrawal], list[Moved]]:
        """(rows whose recipient is not blocked, the moves that REJECTED the others). A row
        that moved meanwhile is left out of both (the next round reads it again)."""
        with sessions() as session:
            blocked = blocked_among(session, {row.recipient for row in rows})
        if not blocked:
            return list(rows), []
        moved: list[Moved] = []
        for row in rows:
            if row.recipient not in blocked:
                continue
            try:
                with sessions.begin() as session:
                    current = session.get(Withdrawal, row.id)
                    if current is None or current.version != row.version:
                        raise TransitionConflict(row.id)
                    moved.append(
                        move(
                            session,
                            current,
                            State.REJECTED,
                            actor=ACTOR,
                            reason=ApprovalReason.ADDRESS_BLOCKED,
                            message=BLOCKED_MESSAGE,
                            where=[Withdrawal.payout_tx_id.is_(None)],
                        )
                    )
            except TransitionConflict:
                continue
        return [row for row in rows if row.recipient not in blocked], moved
