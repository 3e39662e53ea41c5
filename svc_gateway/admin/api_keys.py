"""Partners' API keys: created (shown once), listed, revoked. A part of `AdminCore`."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import controls
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.admin.names import (
    decode_token,
    encode_token,
    page_offset,
    page_size,
    request_id_field,
)
from svc_gateway.errors import IDEMPOTENCY_KEY_REUSED
from withdrawal_shared.db.admin_audit import SUCCEEDED
from withdrawal_shared.db.api_keys import UnknownPartnerError, create_api_key, list_api_keys
from withdrawal_shared.db.models import AdminAudit, AdminAuditHead, ApiKey, Partner
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import not_found, quoted
from withdrawal_shared.key_revocation import revoke_key


class ApiKeysCore(AdminBase):
    async def create_api_key(
        self, caller: OperatorIdentity, request: admin_pb2.CreateApiKeyRequest
    ) -> admin_pb2.ApiKey:
        partner_id = controls.parse_partner_name(request.parent)
        request_id = request_id_field(request.request_id)
        scopes = controls.requested_scopes(list(request.api_key.scopes))
        rate, burst = controls.requested_limits(request.api_key)
        wanted = {
            "partner": partner_id,
            "scopes": sorted(s.value for s in scopes),
            "rate_limit_per_second": rate,
            "rate_limit_burst": burst,
        }

        def work(session: Session) -> Done:
            if request_id:
                # The audit trail is the idempotency record: queue behind its head first, so
                # two calls with the same key cannot both create one.
                session.execute(
                    update(AdminAuditHead)
                    .where(AdminAuditHead.id == 1)
                    .values(seq=AdminAuditHead.seq)
                )
                earlier = self._earlier_api_key(session, caller.operator_id, request_id)
                if earlier is not None:
                    recorded = {k: earlier.get(k) for k in wanted}
                    if recorded != wanted:
                        name = controls.api_key_name(earlier["partner"], earlier["key"])
                        raise IDEMPOTENCY_KEY_REUSED.error(
                            f"The idempotency key {quoted(request_id)} was already used for "
                            f"another API key ({name}); use a new key for a new API key.",
                            metadata={"api_key": name},
                        )
                    row = session.get(ApiKey, earlier["key"])
                    if row is not None:
                        infos = list_api_keys(session, partner_id)
                        info = next(i for i in infos if i.prefix == row.prefix)
                        return Done(controls.api_key_to_proto(info), request.parent)
            try:
                created = create_api_key(
                    session,
                    partner_id,
                    scopes,
                    rate_limit_per_second=rate,
                    rate_limit_burst=burst,
                )
            except UnknownPartnerError:
                raise not_found(request.parent) from None
            after = {**controls.api_key_as_dict(created.key), "request_id": request_id or None}
            return Done(
                controls.api_key_to_proto(created.key, created.token),
                controls.api_key_name(partner_id, created.key.prefix),
                None,
                after,
            )

        return await self._db(self._audited, caller, "CreateApiKey", request.parent, work)

    @staticmethod
    def _earlier_api_key(
        session: Session, operator_id: str, request_id: str
    ) -> dict[str, Any] | None:
        """The key this caller created with this idempotency key, as audited."""
        needle = json.dumps({"request_id": request_id}, separators=(",", ":"))[1:-1]
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = session.scalars(
            select(AdminAudit.after_value).where(
                AdminAudit.operator_id == operator_id,
                AdminAudit.action == "CreateApiKey",
                AdminAudit.outcome == SUCCEEDED,
                AdminAudit.after_value.like(f"%{escaped}%", escape="\\"),
            )
        )
        for text in rows:
            value = json.loads(text or "{}")
            if value.get("request_id") == request_id:
                return value  # type: ignore[no-any-return]
        return None

    async def list_api_keys(
        self, caller: OperatorIdentity, request: admin_pb2.ListApiKeysRequest
    ) -> admin_pb2.ListApiKeysResponse:
        partner_id = controls.parse_partner_name(request.parent)
        size = page_size(request.page_size)
        offset = page_offset(decode_token(request.page_token, request.parent))

        def read() -> admin_pb2.ListApiKeysResponse:
            with self.sessions() as session:
                if session.get(Partner, partner_id) is None:
                    raise not_found(request.parent)
                keys = list_api_keys(session, partner_id)
            page = keys[offset : offset + size]
            response = admin_pb2.ListApiKeysResponse(
                api_keys=[controls.api_key_to_proto(k) for k in page]
            )
            if len(keys) > offset + size:
                response.next_page_token = encode_token(str(offset + size), request.parent)
            return response

        return await self._db(read)

    async def revoke_api_key(
        self, caller: OperatorIdentity, request: admin_pb2.RevokeApiKeyRequest
    ) -> admin_pb2.ApiKey:
        """Revoke through `key_revocation.revoke_key`, which commits the revocation and then
        publishes it to every gateway; its audit row follows in a transaction of its own."""
        partner_id, prefix = controls.parse_api_key_name(request.name)
        if self.redis is None:
            raise RuntimeError("AdminCore needs redis to publish key revocations")

        def was_revoked() -> bool | None:
            with self.sessions() as session:
                row = session.get(ApiKey, prefix)
                if row is None or row.partner_id != partner_id:
                    return None
                return row.revoke_time is not None

        before_revoked = await self._db(was_revoked)
        revocation = None
        if before_revoked is not None:
            revocation = await revoke_key(
                self.sessions, self.redis, self.redis_prefix, partner_id, prefix
            )

        def work(session: Session) -> Done:
            if revocation is None:
                raise not_found(request.name)
            after = controls.api_key_as_dict(revocation.key)
            response = controls.api_key_to_proto(revocation.key)
            published = {"published": revocation.published}
            if before_revoked:
                return Done(response, request.name, None, published)
            before = {**after, "revoked": False}
            return Done(response, request.name, before, {**after, **published})

        return await self._db(self._audited, caller, "RevokeApiKey", request.name, work)
