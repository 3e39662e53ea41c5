"""The transport-neutral core of the admin API: what each AdminService method does.

The dispatcher calls each method (`GetOperator` -> `get_operator`) with the authenticated
`OperatorIdentity`, after checking its role. Database work runs on the gateway's thread pool.
Every method that changes something runs in one transaction with its admin audit row
(SUCCEEDED, with the target's values before and after); a refusal is audited in a
transaction of its own (DENIED for PERMISSION_DENIED, FAILED otherwise). Reads are not
audited, except when refused for lack of a role (the dispatcher does that).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import changes, controls
from svc_gateway.errors import CONCURRENT_MODIFICATION, IDEMPOTENCY_KEY_REUSED
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.approvals import blocklist, rule_admin
from withdrawal_shared.approvals import core as approvals
from withdrawal_shared.approvals.rules import Rule
from withdrawal_shared.db import pauses, tier_admin, token_settings
from withdrawal_shared.db.admin_audit import (
    DENIED,
    FAILED,
    SUCCEEDED,
    append_admin_audit,
)
from withdrawal_shared.db.api_keys import (
    UnknownPartnerError,
    create_api_key,
    list_api_keys,
)
from withdrawal_shared.db.changes import ChangeRegistry
from withdrawal_shared.db.models import (
    AdminAudit,
    AdminAuditHead,
    AdminChange,
    ApiKey,
    Chain,
    Operator,
    OperatorCredential,
    Partner,
    Token,
)
from withdrawal_shared.db.operators import (
    CREDENTIAL_SCHEME,
    OPERATOR_ID,
    OperatorIdentity,
    decode_roles,
    issue_credential,
    operator_name,
)
from withdrawal_shared.db.transitions import Moved, TransitionConflict
from withdrawal_shared.errors import (
    ApiError,
    Code,
    FieldViolation,
    invalid_argument,
    not_found,
    quoted,
)
from withdrawal_shared.ids import is_ulid
from withdrawal_shared.key_revocation import revoke_key

T = TypeVar("T")
Publish = Callable[[Sequence[Moved]], Awaitable[object]]
"""Publishes committed withdrawal state changes (the gateway's `queue.publish_many`)."""
DECISION_ATTEMPTS = 3
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_CREDENTIAL_NAME = re.compile(r"^operators/([a-z][a-z0-9-]{1,62})/credentials/([0-9a-f]{8})$")
_STATE_FILTER = re.compile(r"^\s*state\s*=\s*(?:STATE_)?([A-Z]+)\s*$")
_ROLE_VALUES = {
    "viewer": admin_pb2.ROLE_VIEWER,
    "operator": admin_pb2.ROLE_OPERATOR,
    "approver": admin_pb2.ROLE_APPROVER,
    "admin": admin_pb2.ROLE_ADMIN,
}
_OUTCOMES = {
    SUCCEEDED: admin_pb2.AdminAuditEntry.OUTCOME_SUCCEEDED,
    DENIED: admin_pb2.AdminAuditEntry.OUTCOME_DENIED,
    FAILED: admin_pb2.AdminAuditEntry.OUTCOME_FAILED,
}


@dataclass(frozen=True)
class Done:
    """What an audited unit of work returns: the response, and what the audit row records."""

    response: Any
    target: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


# ---------------------------------------------------------------- conversion


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=dt.UTC))
    return ts


def _struct(text: str | None) -> struct_pb2.Struct | None:
    if text is None:
        return None
    value = struct_pb2.Struct()
    value.update(json.loads(text))
    return value


def operator_to_proto(row: Operator) -> admin_pb2.Operator:
    return admin_pb2.Operator(
        name=operator_name(row.id),
        display_name=row.display_name,
        roles=[_ROLE_VALUES[r.value] for r in sorted(decode_roles(row.roles), key=_role_order)],
        state=admin_pb2.Operator.STATE_ACTIVE if row.enabled else admin_pb2.Operator.STATE_DISABLED,
        create_time=_timestamp(row.create_time),
        update_time=_timestamp(row.update_time),
    )


def _role_order(role: object) -> int:
    return list(_ROLE_VALUES).index(str(role))


def credential_to_proto(row: OperatorCredential, secret: str = "") -> admin_pb2.OperatorCredential:
    return admin_pb2.OperatorCredential(
        name=f"{operator_name(row.operator_id)}/credentials/{row.prefix.split('_', 1)[1]}",
        prefix=row.prefix,
        secret=secret,
        description=row.description,
        create_time=_timestamp(row.create_time),
        revoke_time=_timestamp(row.revoke_time),
    )


def change_to_proto(row: AdminChange) -> admin_pb2.Change:
    return admin_pb2.Change(
        name=changes.change_name(row.id),
        kind=row.kind,
        payload=_struct(row.payload),
        state=admin_pb2.Change.State.Value(f"STATE_{row.state}"),
        proposer=operator_name(row.proposed_by),
        decider=operator_name(row.decided_by) if row.decided_by else "",
        target=row.target,
        reject_reason=row.reject_reason,
        create_time=_timestamp(row.create_time),
        expire_time=_timestamp(row.expire_time),
        decide_time=_timestamp(row.decide_time),
    )


def audit_to_proto(row: AdminAudit) -> admin_pb2.AdminAuditEntry:
    return admin_pb2.AdminAuditEntry(
        name=f"auditEntries/{row.seq}",
        operator=operator_name(row.operator_id),
        action=row.action,
        target=row.target,
        before=_struct(row.before_value),
        after=_struct(row.after_value),
        outcome=_OUTCOMES[row.outcome],
        reason=row.reason,
        create_time=_timestamp(row.occur_time),
        hash=row.hash,
    )


# ---------------------------------------------------------------- request parsing


def parse_operator_name(name: str, field: str = "name") -> str:
    operator_id = name.removeprefix("operators/")
    if operator_id == name or not OPERATOR_ID.match(operator_id):
        raise invalid_argument(
            [
                FieldViolation(
                    field, f"{quoted(name)} is not an operator name (operators/{{operator}})"
                )
            ]
        )
    return operator_id


def parse_change_name(name: str) -> str:
    change_id = name.removeprefix(changes.CHANGE_PREFIX)
    if change_id == name or not is_ulid(change_id):
        raise invalid_argument(
            [FieldViolation("name", f"{quoted(name)} is not a change name (changes/{{change}})")]
        )
    return change_id


def _page_size(size: int) -> int:
    if size < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(after: str, filter_text: str = "") -> str:
    raw = json.dumps({"a": after, "f": filter_text}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, filter_text: str = "") -> str | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, given = data["a"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid_argument(
            [FieldViolation("page_token", "is not a page token this API returned")]
        ) from None
    if given != filter_text or not isinstance(after, str):
        raise invalid_argument(
            [FieldViolation("page_token", "was issued for another filter; use the same one")]
        )
    return after


def _request_id(value: str, field: str = "request_id") -> str:
    if value and not REQUEST_ID.match(value):
        raise invalid_argument(
            [
                FieldViolation(
                    field,
                    "must be 1-128 letters, digits and . _ : -, starting with a letter or digit",
                )
            ]
        )
    return value


# ---------------------------------------------------------------- the core


class AdminCore:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: Executor,
        registry: ChangeRegistry,
        change_ttl_seconds: float,
        *,
        redis: aioredis.Redis | None = None,
        redis_prefix: str = "",
        on_reference_change: Callable[[], None] | None = None,
        publish: Publish | None = None,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.registry = registry
        self.change_ttl_seconds = change_ttl_seconds
        # Where key revocations are published (`key_revocation.revoke_key`).
        self.redis = redis
        self.redis_prefix = redis_prefix
        # Called after a token change commits (the gateway drops its reference-data cache, so
        # it applies the change at once; other processes within REFERENCE_MAX_AGE_SECONDS).
        self.on_reference_change = on_reference_change
        self.publish = publish
        self.on_applied = on_applied
        """Called after a change was confirmed (the gateway drops its cached limits)."""

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _audited(
        self, caller: OperatorIdentity, action: str, target: str, work: Callable[[Session], Done]
    ) -> Any:
        """Run `work` and its SUCCEEDED audit row in one transaction; audit a refusal in one
        of its own and re-raise it."""
        try:
            with self.sessions.begin() as session:
                done = work(session)
                append_admin_audit(
                    session,
                    operator_id=caller.operator_id,
                    action=action,
                    target=done.target,
                    outcome=SUCCEEDED,
                    before=done.before,
                    after=done.after,
                )
            return done.response
        except ApiError as err:
            self.record_refusal(caller, action, target, err)
            raise

    def record_refusal(
        self, caller: OperatorIdentity, action: str, target: str, err: ApiError
    ) -> None:
        """Audit a refused call (DENIED for PERMISSION_DENIED, FAILED otherwise)."""
        with self.sessions.begin() as session:
            append_admin_audit(
                session,
                operator_id=caller.operator_id,
                action=action,
                target=target,
                outcome=DENIED if err.code == Code.PERMISSION_DENIED else FAILED,
                reason=err.reason,
            )

    def _expire_due(self) -> None:
        with self.sessions.begin() as session:
            changes.expire_due(session)

    # -- operators

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
        size = _page_size(request.page_size)
        after = _decode_token(request.page_token)

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
                response.next_page_token = _encode_token(rows[size - 1].id)
            return response

        return await self._db(read)

    # -- changes

    async def create_change(
        self, caller: OperatorIdentity, request: admin_pb2.CreateChangeRequest
    ) -> admin_pb2.Change:
        request_id = _request_id(request.request_id)
        if not request.HasField("change") or not request.change.kind:
            raise invalid_argument([FieldViolation("change.kind", "is required")])
        payload = json_format.MessageToDict(request.change.payload)

        def work(session: Session) -> Done:
            proposed = changes.propose(
                session,
                self.registry,
                kind=request.change.kind,
                payload=payload,
                proposer=caller.operator_id,
                request_id=request_id,
                ttl_seconds=self.change_ttl_seconds,
            )
            row = proposed.row
            after = changes.change_as_dict(row) if proposed.created else None
            return Done(change_to_proto(row), changes.change_name(row.id), None, after)

        return await self._db(self._audited, caller, "CreateChange", request.change.kind, work)

    async def get_change(
        self, caller: OperatorIdentity, request: admin_pb2.GetChangeRequest
    ) -> admin_pb2.Change:
        change_id = parse_change_name(request.name)

        def read() -> admin_pb2.Change:
            self._expire_due()
            with self.sessions() as session:
                row = session.get(AdminChange, change_id)
                if row is None:
                    raise not_found(request.name)
                return change_to_proto(row)

        return await self._db(read)

    async def list_changes(
        self, caller: OperatorIdentity, request: admin_pb2.ListChangesRequest
    ) -> admin_pb2.ListChangesResponse:
        size = _page_size(request.page_size)
        state: str | None = None
        if request.filter.strip():
            match = _STATE_FILTER.match(request.filter)
            states = {changes.PROPOSED, changes.APPLIED, changes.REJECTED, changes.EXPIRED}
            if match is None or match.group(1) not in states:
                raise invalid_argument(
                    [
                        FieldViolation(
                            "filter",
                            "must be empty or `state = X`, X one of " + ", ".join(sorted(states)),
                        )
                    ]
                )
            state = match.group(1)
        after = _decode_token(request.page_token, request.filter)

        def read() -> admin_pb2.ListChangesResponse:
            self._expire_due()
            query = select(AdminChange).order_by(AdminChange.id.desc()).limit(size + 1)
            if state is not None:
                query = query.where(AdminChange.state == state)
            if after is not None:
                query = query.where(AdminChange.id < after)
            with self.sessions() as session:
                rows = list(session.scalars(query))
            response = admin_pb2.ListChangesResponse(
                changes=[change_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = _encode_token(rows[size - 1].id, request.filter)
            return response

        return await self._db(read)

    async def confirm_change(
        self, caller: OperatorIdentity, request: admin_pb2.ConfirmChangeRequest
    ) -> admin_pb2.Change:
        change_id = parse_change_name(request.name)

        def work(session: Session) -> Done:
            row, effect = changes.confirm(session, self.registry, change_id, caller.operator_id)
            if effect is None:  # already applied: nothing changed now
                return Done(change_to_proto(row), request.name)
            before: dict[str, Any] = {"change_state": changes.PROPOSED, "target": effect.target}
            after: dict[str, Any] = {"change_state": changes.APPLIED, "target": effect.target}
            before["value"] = dict(effect.before) if effect.before is not None else None
            after["value"] = dict(effect.after) if effect.after is not None else None
            return Done(change_to_proto(row), request.name, before, after)

        def run() -> admin_pb2.Change:
            self._expire_due()
            return self._audited(caller, "ConfirmChange", request.name, work)  # type: ignore[no-any-return]

        change = await self._db(run)
        if self.on_applied is not None:
            self.on_applied()
        return change

    async def reject_change(
        self, caller: OperatorIdentity, request: admin_pb2.RejectChangeRequest
    ) -> admin_pb2.Change:
        change_id = parse_change_name(request.name)
        if len(request.reason) > 256:
            raise invalid_argument([FieldViolation("reason", "must be at most 256 characters")])

        def work(session: Session) -> Done:
            row, rejected = changes.reject(session, change_id, caller.operator_id, request.reason)
            if not rejected:
                return Done(change_to_proto(row), request.name)
            before = {"change_state": changes.PROPOSED}
            after = {"change_state": changes.REJECTED, "reason": request.reason}
            return Done(change_to_proto(row), request.name, before, after)

        def run() -> admin_pb2.Change:
            self._expire_due()
            return self._audited(caller, "RejectChange", request.name, work)  # type: ignore[no-any-return]

        return await self._db(run)

    # -- operator credentials

    async def create_operator_credential(
        self, caller: OperatorIdentity, request: admin_pb2.CreateOperatorCredentialRequest
    ) -> admin_pb2.OperatorCredential:
        operator_id = parse_operator_name(request.parent, "parent")
        request_id = _request_id(request.request_id)
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
        match = _CREDENTIAL_NAME.match(request.name)
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

    # -- the audit trail

    async def list_admin_audit_entries(
        self, caller: OperatorIdentity, request: admin_pb2.ListAdminAuditEntriesRequest
    ) -> admin_pb2.ListAdminAuditEntriesResponse:
        size = _page_size(request.page_size)
        after = _decode_token(request.page_token)
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
                response.next_page_token = _encode_token(str(rows[size - 1].seq))
            return response

        return await self._db(read)

    # -- partners' API keys

    async def create_api_key(
        self, caller: OperatorIdentity, request: admin_pb2.CreateApiKeyRequest
    ) -> admin_pb2.ApiKey:
        partner_id = controls.parse_partner_name(request.parent)
        request_id = _request_id(request.request_id)
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
        size = _page_size(request.page_size)
        offset = _offset(_decode_token(request.page_token, request.parent))

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
                response.next_page_token = _encode_token(str(offset + size), request.parent)
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

    # -- the payout kill switch

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

    # -- tokens

    async def list_tokens(
        self, caller: OperatorIdentity, request: admin_pb2.ListTokensRequest
    ) -> admin_pb2.ListTokensResponse:
        chain = controls.parse_chain_parent(request.parent)
        size = _page_size(request.page_size)
        offset = _offset(_decode_token(request.page_token, request.parent))

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
                response.next_page_token = _encode_token(str(offset + size), request.parent)
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

    # ---- approvals, blocklist, tiers

    async def list_pending_approvals(
        self, caller: OperatorIdentity, request: admin_pb2.ListPendingApprovalsRequest
    ) -> admin_pb2.ListPendingApprovalsResponse:
        size = _page_size(request.page_size)
        after = _decode_token(request.page_token) or ""

        def read() -> admin_pb2.ListPendingApprovalsResponse:
            rows = approvals.list_pending(self.sessions, limit=size + 1, after=after)
            with self.sessions() as session:
                tokens = {t.id: t for t in session.scalars(select(Token))}
            response = admin_pb2.ListPendingApprovalsResponse(
                pending_approvals=[pending_to_proto(r, tokens[r.token_id]) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = _encode_token(rows[size - 1].withdrawal_id)
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
        size = _page_size(request.page_size)
        after = _decode_token(request.page_token) or ""

        def read() -> admin_pb2.ListBlockedAddressesResponse:
            rows = blocklist.list_blocked(self.sessions, limit=size + 1, after=after)
            response = admin_pb2.ListBlockedAddressesResponse(
                blocked_addresses=[blocked_to_proto(r) for r in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = _encode_token(rows[size - 1].address)
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

    # ---- approval rules

    async def list_approval_rules(
        self, caller: OperatorIdentity, request: admin_pb2.ListApprovalRulesRequest
    ) -> admin_pb2.ListApprovalRulesResponse:
        size = _page_size(request.page_size)
        offset = _offset(_decode_token(request.page_token))

        def read() -> admin_pb2.ListApprovalRulesResponse:
            with self.sessions() as session:
                rules = rule_admin.list_rules(session)
            response = admin_pb2.ListApprovalRulesResponse(
                approval_rules=[rule_to_proto(r) for r in rules[offset : offset + size]]
            )
            if len(rules) > offset + size:
                response.next_page_token = _encode_token(str(offset + size))
            return response

        return await self._db(read)


# ---------------------------------------------------------------- approvals, blocklist, tiers


def _offset(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit():
        raise invalid_argument(
            [FieldViolation("page_token", "is not a page token this API returned")]
        )
    return int(after)


BLOCKED_PREFIX = "blockedAddresses/"


def parse_withdrawal_name(name: str) -> str:
    withdrawal_id = name.removeprefix("withdrawals/")
    if withdrawal_id == name or not is_ulid(withdrawal_id):
        raise invalid_argument(
            [
                FieldViolation(
                    "name", f"{quoted(name)} is not a withdrawal name (withdrawals/{{id}})"
                )
            ]
        )
    return withdrawal_id


def pending_to_proto(row: approvals.PendingApproval, token: Token) -> admin_pb2.PendingApproval:
    return admin_pb2.PendingApproval(
        withdrawal=f"withdrawals/{row.withdrawal_id}",
        partner=row.partner_id,
        chain=row.chain,
        token=token.symbol,
        recipient_address=row.recipient,
        amount=format_amount(row.amount, token.decimals),
        creator=row.created_by or "",
        rule=row.rule_name,
        approvals_required=row.approvals_required,
        approvers=[operator_name(o) for o in row.approved_by],
        create_time=_timestamp(row.create_time),
        request_time=_timestamp(row.requested_time),
    )


def blocked_to_proto(row: blocklist.Blocked) -> admin_pb2.BlockedAddress:
    return admin_pb2.BlockedAddress(
        name=BLOCKED_PREFIX + row.address,
        address=row.address,
        reason=row.reason,
        creator=operator_name(row.added_by),
        create_time=_timestamp(row.create_time),
    )


def tier_to_proto(tier: tier_admin.TierInfo) -> admin_pb2.Tier:
    result = admin_pb2.Tier(
        name=f"tiers/{tier.name}",
        description=tier.description,
        default_priority=tier.default_priority,
    )
    for limits in tier.limits:
        item = result.limits.add(chain=limits.chain, token=limits.token)
        if limits.per_withdrawal_max is not None:
            item.per_withdrawal_max = limits.per_withdrawal_max
        if limits.daily_amount is not None:
            item.daily_amount = limits.daily_amount
        if limits.daily_count is not None:
            item.daily_count = limits.daily_count
    return result


# ---------------------------------------------------------------- approval rules


def rule_to_proto(rule: Rule) -> admin_pb2.ApprovalRule:
    result = admin_pb2.ApprovalRule(
        name=rule_admin.rule_name(rule.name),
        position=rule.position,
        action=admin_pb2.ApprovalRule.Action.Value(f"ACTION_{rule.action.value}"),
        approvals_required=rule.approvals_required,
        enabled=rule.enabled,
        conditions=admin_pb2.ApprovalRuleConditions(),
    )
    for key, value in rule_admin.rule_as_dict(rule)["conditions"].items():
        setattr(result.conditions, key, value)
    return result
