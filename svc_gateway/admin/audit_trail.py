"""The admin audit trail's reads. A part of `AdminCore`."""

from __future__ import annotations

from sqlalchemy import select

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin.base import AdminBase
from svc_gateway.admin.convert import audit_to_proto
from svc_gateway.admin.names import decode_token, encode_token, page_size
from withdrawal_shared.db.models import AdminAudit
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import FieldViolation, invalid_argument


class AuditTrailCore(AdminBase):
    async def list_admin_audit_entries(
        self, caller: OperatorIdentity, request: admin_pb2.ListAdminAuditEntriesRequest
    ) -> admin_pb2.ListAdminAuditEntriesResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token)
        if after is not None and not after.isdigit():
            raise invalid_argument(
                [FieldViolation("page_token", "is not a page token this API returned")]
            )

        def read() -> admin_pb2.ListAdminAuditEntriesResponse:
            query = select(AdminAudit).order_by(AdminAudit.seq.desc()).limit(size + 1)
            if after is not None:
                query = query.where(AdminAudit.seq < int(after))
            with self.sessions() as session:
                rows = list(session.scalars(query))
            response = admin_pb2.ListAdminAuditEntriesResponse(
                admin_audit_entries=[audit_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(str(rows[size - 1].seq))
            return response

        return await self._db(read)
