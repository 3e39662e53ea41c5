"""Approving or rejecting a CSV batch as one decision: a part of `AdminCore`.

The decision applies to the batch's withdrawals waiting PENDING_APPROVAL, each through the
very function the single ApproveWithdrawal / RejectWithdrawal uses
(`withdrawal_shared.approvals.core.approve_in` / `reject_in`), so the rules' quorum, "one
operator counts once" and "the creator cannot approve" hold row by row; there is no second
copy of them here. The rows are decided `ROWS_PER_TRANSACTION` at a time, in id order, each
group in one transaction with its admin audit row (the batch as target, the counts as
`after`); their state changes are published after each commit. A row the caller may not
approve (SELF_APPROVAL) or that left PENDING_APPROVAL meanwhile is counted in `refused` by
reason and left as it is. A decision interrupted between groups is completed by repeating it:
rows already approved by the caller count as `unchanged`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin.approval_queue import DECISION_ATTEMPTS
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.batches.core import parse_batch_name
from svc_gateway.errors import CONCURRENT_MODIFICATION
from withdrawal_shared.approvals import core as approvals
from withdrawal_shared.approvals.errors import NOT_PENDING_APPROVAL
from withdrawal_shared.db.models import Batch, Withdrawal
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.db.transitions import Moved, TransitionConflict
from withdrawal_shared.errors import ApiError, FieldViolation, invalid_argument, not_found
from withdrawal_shared.states import State

ROWS_PER_TRANSACTION = 500
Decide = Callable[[Session, str, str, str], approvals.ApprovalOutcome]


class _Tally:
    def __init__(self) -> None:
        self.pending = 0
        self.states: Counter[State] = Counter()
        self.unchanged = 0
        self.refused: Counter[str] = Counter()

    def counts(self) -> dict[str, object]:
        return {
            "pending": self.pending,
            "approved": self.states[State.QUEUED],
            "recorded": self.states[State.PENDING_APPROVAL],
            "rejected": self.states[State.REJECTED],
            "unchanged": self.unchanged,
            "refused": dict(self.refused),
        }


class BatchApprovalsCore(AdminBase):
    async def approve_batch(
        self, caller: OperatorIdentity, request: admin_pb2.ApproveBatchRequest
    ) -> admin_pb2.BatchApprovalDecision:
        return await self._decide_batch(caller, "ApproveBatch", request, approvals.approve_in)

    async def reject_batch(
        self, caller: OperatorIdentity, request: admin_pb2.RejectBatchRequest
    ) -> admin_pb2.BatchApprovalDecision:
        return await self._decide_batch(caller, "RejectBatch", request, approvals.reject_in)

    async def _decide_batch(
        self,
        caller: OperatorIdentity,
        action: str,
        request: admin_pb2.ApproveBatchRequest | admin_pb2.RejectBatchRequest,
        decide: Decide,
    ) -> admin_pb2.BatchApprovalDecision:
        batch_id = parse_batch_name(request.name)
        if len(request.reason) > 256:
            raise invalid_argument([FieldViolation("reason", "must be at most 256 characters")])
        if not await self._db(self._batch_exists, batch_id):
            err = not_found(request.name)
            await self._db(self.record_refusal, caller, action, request.name, err)
            raise err
        tally = _Tally()
        after = ""
        while True:
            ids = await self._db(self._pending_ids, batch_id, after)
            if not ids:
                break
            moved = await self._db(self._decide_group, caller, action, request, decide, ids, tally)
            if moved and self.publish is not None:
                await self.publish(moved)
            after = ids[-1]
        if tally.pending == 0:
            err = NOT_PENDING_APPROVAL.error(
                f"No withdrawal of {request.name} is waiting for approval; nothing was recorded.",
                metadata={"batch": request.name},
            )
            await self._db(self.record_refusal, caller, action, request.name, err)
            raise err
        return admin_pb2.BatchApprovalDecision(
            batch=request.name,
            pending=tally.pending,
            approved=tally.states[State.QUEUED],
            recorded=tally.states[State.PENDING_APPROVAL],
            rejected=tally.states[State.REJECTED],
            unchanged=tally.unchanged,
            refused=dict(tally.refused),
        )

    def _batch_exists(self, batch_id: str) -> bool:
        with self.sessions() as session:
            return session.get(Batch, batch_id) is not None

    def _pending_ids(self, batch_id: str, after: str) -> list[str]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Withdrawal.id)
                    .where(
                        Withdrawal.batch_id == batch_id,
                        Withdrawal.state == State.PENDING_APPROVAL.value,
                        Withdrawal.id > after,
                    )
                    .order_by(Withdrawal.id)
                    .limit(ROWS_PER_TRANSACTION)
                )
            )

    def _decide_group(
        self,
        caller: OperatorIdentity,
        action: str,
        request: admin_pb2.ApproveBatchRequest | admin_pb2.RejectBatchRequest,
        decide: Decide,
        ids: Sequence[str],
        tally: _Tally,
    ) -> list[Moved]:
        """One transaction: each row's decision and the group's admin audit row; retried as a
        whole when a row moved meanwhile. Returns the state changes to publish."""
        for _ in range(DECISION_ATTEMPTS):
            group = _Tally()
            moved: list[Moved] = []

            def work(session: Session, group: _Tally = group, moved: list[Moved] = moved) -> Done:
                for withdrawal_id in ids:
                    try:
                        outcome = decide(session, withdrawal_id, caller.operator_id, request.reason)
                    except ApiError as err:  # raised before the row was written
                        group.refused[err.reason] += 1
                        continue
                    group.pending += 1
                    if outcome.counted:
                        group.states[outcome.state] += 1
                        moved.extend(outcome.moved)
                    else:
                        group.unchanged += 1
                return Done(None, request.name, {"rows": len(ids)}, group.counts())

            try:
                self._audited(caller, action, request.name, work)
            except TransitionConflict:
                continue
            tally.pending += group.pending
            tally.states.update(group.states)
            tally.unchanged += group.unchanged
            tally.refused.update(group.refused)
            return moved
        err = CONCURRENT_MODIFICATION.error(
            f"Withdrawals of {request.name} kept changing while the decision was recorded; "
            "repeat it (what was recorded stays, once)."
        )
        self.record_refusal(caller, action, request.name, err)
        raise err
