"""The approval queue and its decisions, the blocklist, tiers and approval rules: a part of
`AdminCore`."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.admin.convert import (
    blocked_to_proto,
    pending_to_proto,
    rule_to_proto,
    tier_to_proto,
)
from svc_gateway.admin.names import (
    BLOCKED_PREFIX,
    decode_token,
    encode_token,
    page_offset,
    page_size,
    parse_withdrawal_name,
)
from svc_gateway.errors import CONCURRENT_MODIFICATION
from withdrawal_shared.approvals import blocklist, rule_admin
from withdrawal_shared.approvals import core as approvals
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.models import Token
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.db.transitions import TransitionConflict
from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted

DECISION_ATTEMPTS = 3
"""How often a decision is retried when a concurrent one moved the withdrawal first."""


class ApprovalQueueCore(AdminBase):
    async def list_pending_approvals(
        self, caller: OperatorIdentity, request: admin_pb2.ListPendingApprovalsRequest
    ) -> admin_pb2.ListPendingApprovalsResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token) or ""

        def read() -> admin_pb2.ListPendingApprovalsResponse:
            rows = approvals.list_pending(self.sessions, limit=size + 1, after=after)
            with self.sessions() as session:
                tokens = {t.id: t for t in session.scalars(select(Token))}
            response = admin_pb2.ListPendingApprovalsResponse(
                pending_approvals=[pending_to_proto(r, tokens[r.token_id]) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(rows[size - 1].withdrawal_id)
            return response

        return await self._db(read)

    async def approve_withdrawal(
        self, caller: OperatorIdentity, request: admin_pb2.ApproveWithdrawalRequest
    ) -> admin_pb2.ApprovalDecision:
        return await self._decide(caller, "ApproveWithdrawal", request, approvals.approve_in)

    async def reject_withdrawal(
        self, caller: OperatorIdentity, request: admin_pb2.RejectWithdrawalRequest
    ) -> admin_pb2.ApprovalDecision:
        return await self._decide(caller, "RejectWithdrawal", request, approvals.reject_in)

    async def _decide(
        self,
        caller: OperatorIdentity,
        action: str,
        request: admin_pb2.ApproveWithdrawalRequest | admin_pb2.RejectWithdrawalRequest,
        decide: Callable[[Session, str, str, str], approvals.ApprovalOutcome],
    ) -> admin_pb2.ApprovalDecision:
        """One approval decision and its admin audit row in one transaction (retried when the
        withdrawal moved meanwhile); its state changes are published after the commit."""
        withdrawal_id = parse_withdrawal_name(request.name)
        if len(request.reason) > 256:
            raise invalid_argument([FieldViolation("reason", "must be at most 256 characters")])
        outcomes: list[approvals.ApprovalOutcome] = []

        def work(session: Session) -> Done:
            outcome = decide(session, withdrawal_id, caller.operator_id, request.reason)
            outcomes.append(outcome)
            response = admin_pb2.ApprovalDecision(
                withdrawal=request.name,
                state=outcome.state.value,
                approvals=outcome.approvals,
                approvals_required=outcome.approvals_required,
                counted=outcome.counted,
            )
            if not outcome.moved:  # the operator's approval was already recorded
                return Done(response, request.name)
            before = {"state": outcome.moved[0].from_state, "approvals": outcome.approvals}
            if action == "ApproveWithdrawal":
                before["approvals"] = outcome.approvals - 1
            after = {
                "state": outcome.state.value,
                "approvals": outcome.approvals,
                "approvals_required": outcome.approvals_required,
                "reason": request.reason,
            }
            return Done(response, request.name, before, after)

        def run() -> admin_pb2.ApprovalDecision:
            for _ in range(DECISION_ATTEMPTS):
                try:
                    return self._audited(caller, action, request.name, work)  # type: ignore[no-any-return]
                except TransitionConflict:
                    outcomes.clear()
            err = CONCURRENT_MODIFICATION.error(
                f"{request.name} kept changing while the decision was recorded; retry.",
            )
            self.record_refusal(caller, action, request.name, err)
            raise err

        decision = await self._db(run)
        moved = [m for outcome in outcomes for m in outcome.moved]
        if moved and self.publish is not None:
            await self.publish(moved)
        return decision

    async def list_blocked_addresses(
        self, caller: OperatorIdentity, request: admin_pb2.ListBlockedAddressesRequest
    ) -> admin_pb2.ListBlockedAddressesResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token) or ""

        def read() -> admin_pb2.ListBlockedAddressesResponse:
            rows = blocklist.list_blocked(self.sessions, limit=size + 1, after=after)
            response = admin_pb2.ListBlockedAddressesResponse(
                blocked_addresses=[blocked_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(rows[size - 1].address)
            return response

        return await self._db(read)

    async def block_address(
        self, caller: OperatorIdentity, request: admin_pb2.BlockAddressRequest
    ) -> admin_pb2.BlockedAddress:
        target = BLOCKED_PREFIX + request.address.lower()

        def work(session: Session) -> Done:
            entry, added = blocklist.block_in(
                session, request.address, caller.operator_id, request.reason
            )
            name = BLOCKED_PREFIX + entry.address
            if not added:
                return Done(blocked_to_proto(entry), name)
            after = {"address": entry.address, "blocked": True, "reason": entry.reason}
            return Done(blocked_to_proto(entry), name, {"blocked": False}, after)

        return await self._db(self._audited, caller, "BlockAddress", target, work)

    async def unblock_address(
        self, caller: OperatorIdentity, request: admin_pb2.UnblockAddressRequest
    ) -> admin_pb2.UnblockAddressResponse:
        address = request.name.removeprefix(BLOCKED_PREFIX)
        if address == request.name:
            raise invalid_argument(
                [
                    FieldViolation(
                        "name", f"{quoted(request.name)} is not a name blockedAddresses/{{address}}"
                    )
                ]
            )

        def work(session: Session) -> Done:
            removed = blocklist.unblock_in(session, address, caller.operator_id)
            normalised = blocklist.normalise_address(address, "name")
            response = admin_pb2.UnblockAddressResponse(
                address=normalised, was_blocked=removed is not None
            )
            name = BLOCKED_PREFIX + normalised
            if removed is None:
                return Done(response, name)
            before = {"address": normalised, "blocked": True, "reason": removed.reason}
            return Done(response, name, before, {"address": normalised, "blocked": False})

        return await self._db(self._audited, caller, "UnblockAddress", request.name, work)

    async def list_tiers(
        self, caller: OperatorIdentity, request: admin_pb2.ListTiersRequest
    ) -> admin_pb2.ListTiersResponse:
        def read() -> admin_pb2.ListTiersResponse:
            with self.sessions() as session:
                tiers = tier_admin.list_tiers(session)
            return admin_pb2.ListTiersResponse(tiers=[tier_to_proto(t) for t in tiers])

        return await self._db(read)

    async def list_approval_rules(
        self, caller: OperatorIdentity, request: admin_pb2.ListApprovalRulesRequest
    ) -> admin_pb2.ListApprovalRulesResponse:
        size = page_size(request.page_size)
        offset = page_offset(decode_token(request.page_token))

        def read() -> admin_pb2.ListApprovalRulesResponse:
            with self.sessions() as session:
                rules = rule_admin.list_rules(session)
            response = admin_pb2.ListApprovalRulesResponse(
                approval_rules=[rule_to_proto(r) for r in rules[offset : offset + size]]
            )
            if len(rules) > offset + size:
                response.next_page_token = encode_token(str(offset + size))
            return response

        return await self._db(read)
