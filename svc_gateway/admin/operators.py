"""Operators and their credentials. A part of `AdminCore`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import changes
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.admin.convert import credential_to_proto, operator_to_proto
from svc_gateway.admin.names import (
    CREDENTIAL_NAME,
    decode_token,
    encode_token,
    page_size,
    parse_operator_name,
    request_id_field,
)
from svc_gateway.errors import IDEMPOTENCY_KEY_REUSED
from withdrawal_shared.db.models import Operator, OperatorCredential
from withdrawal_shared.db.operators import (
    CREDENTIAL_SCHEME,
    OperatorIdentity,
    issue_credential,
    operator_name,
)
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found, quoted


class OperatorsCore(AdminBase):
    async def get_operator(
        self, caller: OperatorIdentity, request: admin_pb2.GetOperatorRequest
    ) -> admin_pb2.Operator:
        operator_id = parse_operator_name(request.name)

        def read() -> admin_pb2.Operator:
            with self.sessions() as session:
                row = session.get(Operator, operator_id)
                if row is None:
                    raise not_found(request.name)
                return operator_to_proto(row)

        return await self._db(read)

    async def list_operators(
        self, caller: OperatorIdentity, request: admin_pb2.ListOperatorsRequest
    ) -> admin_pb2.ListOperatorsResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token)

        def read() -> admin_pb2.ListOperatorsResponse:
            query = select(Operator).order_by(Operator.id).limit(size + 1)
            if after is not None:
                query = query.where(Operator.id > after)
            with self.sessions() as session:
                rows = list(session.scalars(query))
            response = admin_pb2.ListOperatorsResponse(
                operators=[operator_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(rows[size - 1].id)
            return response

        return await self._db(read)

    async def create_operator_credential(
        self, caller: OperatorIdentity, request: admin_pb2.CreateOperatorCredentialRequest
    ) -> admin_pb2.OperatorCredential:
        operator_id = parse_operator_name(request.parent, "parent")
        request_id = request_id_field(request.request_id)
        description = request.credential.description
        if len(description) > 128:
            raise invalid_argument(
                [FieldViolation("credential.description", "must be at most 128 characters")]
            )

        def work(session: Session) -> Done:
            if session.get(Operator, operator_id) is None:
                raise not_found(request.parent)
            if request_id:
                existing = session.scalars(
                    select(OperatorCredential).where(
                        OperatorCredential.created_by == caller.operator_id,
                        OperatorCredential.request_id == request_id,
                    )
                ).one_or_none()
                if existing is not None:
                    if existing.operator_id != operator_id:
                        raise IDEMPOTENCY_KEY_REUSED.error(
                            f"The idempotency key {quoted(request_id)} was already used for a "
                            f"credential of {operator_name(existing.operator_id)}; use a new "
                            "key for a new credential.",
                            metadata={"operator": operator_name(existing.operator_id)},
                        )
                    return Done(credential_to_proto(existing), request.parent)
            row, token = issue_credential(
                session,
                operator_id,
                created_by=caller.operator_id,
                description=description,
                request_id=request_id or None,
            )
            session.flush()
            after = {"credential": row.prefix, "operator": operator_id, "revoked": False}
            return Done(credential_to_proto(row, token), request.parent, None, after)

        return await self._db(
            self._audited, caller, "CreateOperatorCredential", request.parent, work
        )

    async def revoke_operator_credential(
        self, caller: OperatorIdentity, request: admin_pb2.RevokeOperatorCredentialRequest
    ) -> admin_pb2.OperatorCredential:
        match = CREDENTIAL_NAME.match(request.name)
        if match is None:
            raise invalid_argument(
                [
                    FieldViolation(
                        "name",
                        f"{quoted(request.name)} is not a credential name "
                        "(operators/{operator}/credentials/{credential})",
                    )
                ]
            )
        operator_id, prefix = match.group(1), f"{CREDENTIAL_SCHEME}_{match.group(2)}"

        def work(session: Session) -> Done:
            row = session.get(OperatorCredential, prefix, with_for_update=True)
            if row is None or row.operator_id != operator_id:
                raise not_found(request.name)
            if row.revoke_time is not None:
                return Done(credential_to_proto(row), request.name)
            row.revoke_time = changes.now()
            before = {"credential": prefix, "operator": operator_id, "revoked": False}
            after = {**before, "revoked": True}
            return Done(credential_to_proto(row), request.name, before, after)

        return await self._db(self._audited, caller, "RevokeOperatorCredential", request.name, work)
