"""The kill switch (payout pauses) and runtime token settings. A part of `AdminCore`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import controls
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.admin.names import decode_token, encode_token, page_offset, page_size
from withdrawal_shared.db import pauses, token_settings
from withdrawal_shared.db.models import Chain, Token
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found


class PayoutControlsCore(AdminBase):
    async def list_payout_pauses(
        self, caller: OperatorIdentity, request: admin_pb2.ListPayoutPausesRequest
    ) -> admin_pb2.ListPayoutPausesResponse:
        def read() -> admin_pb2.ListPayoutPausesResponse:
            with self.sessions() as session:
                states = pauses.list_pauses(session, include_resumed=request.show_resumed)
            return admin_pb2.ListPayoutPausesResponse(
                payout_pauses=[controls.pause_to_proto(s) for s in states]
            )

        return await self._db(read)

    async def pause_payouts(
        self, caller: OperatorIdentity, request: admin_pb2.PausePayoutsRequest
    ) -> admin_pb2.PayoutPause:
        return await self._pause_or_resume(caller, "PausePayouts", request, request.reason)

    async def resume_payouts(
        self, caller: OperatorIdentity, request: admin_pb2.ResumePayoutsRequest
    ) -> admin_pb2.PayoutPause:
        return await self._pause_or_resume(caller, "ResumePayouts", request, None)

    async def _pause_or_resume(
        self,
        caller: OperatorIdentity,
        action: str,
        request: admin_pb2.PausePayoutsRequest | admin_pb2.ResumePayoutsRequest,
        reason: str | None,
    ) -> admin_pb2.PayoutPause:
        if not request.HasField("scope"):
            raise invalid_argument(
                [FieldViolation("scope", "is required: {} for everything, or a chain and token")]
            )
        scope = controls.pause_scope(request.scope)
        target = f"payoutPauses/{scope.key}"

        def work(session: Session) -> Done:
            if reason is None:
                change = pauses.resume(session, scope, actor=caller.operator_id)
            else:
                change = pauses.pause(session, scope, reason=reason, actor=caller.operator_id)
            response = controls.pause_to_proto(change.after)
            if not change.changed:
                return Done(response, target)
            return Done(
                response,
                target,
                controls.pause_as_dict(change.before),
                controls.pause_as_dict(change.after),
            )

        return await self._db(self._audited, caller, action, target, work)

    async def list_tokens(
        self, caller: OperatorIdentity, request: admin_pb2.ListTokensRequest
    ) -> admin_pb2.ListTokensResponse:
        chain = controls.parse_chain_parent(request.parent)
        size = page_size(request.page_size)
        offset = page_offset(decode_token(request.page_token, request.parent))

        def read() -> admin_pb2.ListTokensResponse:
            query = select(Token).order_by(Token.chain, Token.symbol)
            with self.sessions() as session:
                if chain != controls.ALL_CHAINS:
                    if session.get(Chain, chain) is None:
                        raise not_found(request.parent)
                    query = query.where(Token.chain == chain)
                rows = list(session.scalars(query.offset(offset).limit(size + 1)))
            response = admin_pb2.ListTokensResponse(
                tokens=[controls.token_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(str(offset + size), request.parent)
            return response

        return await self._db(read)

    async def update_token(
        self, caller: OperatorIdentity, request: admin_pb2.UpdateTokenRequest
    ) -> admin_pb2.Token:
        if not request.HasField("token"):
            raise invalid_argument([FieldViolation("token", "is required")])
        chain, symbol = controls.parse_token_name(request.token.name)
        name = request.token.name

        def work(session: Session) -> Done:
            paths = controls.token_mask(request)
            row = session.scalars(
                select(Token).where(Token.chain == chain, Token.symbol == symbol)
            ).one_or_none()
            if row is None:
                raise not_found(name)
            done: list[token_settings.TokenChange] = []
            if "enabled" in paths:
                done.append(
                    token_settings.set_token_enabled(session, chain, symbol, request.token.enabled)
                )
            if "max_amount" in paths:
                base = controls.max_amount_base_units(request.token.max_amount, row.decimals)
                done.append(token_settings.set_token_max_amount(session, chain, symbol, base))
            before, after = done[0].before, done[-1].after
            response = controls.token_to_proto(row)
            if before == after:
                return Done(response, name)
            return Done(
                response,
                name,
                controls.token_as_dict(before, row.decimals),
                controls.token_as_dict(after, row.decimals),
            )

        token: admin_pb2.Token = await self._db(self._audited, caller, "UpdateToken", name, work)
        if self.on_reference_change is not None:
            self.on_reference_change()
        return token
