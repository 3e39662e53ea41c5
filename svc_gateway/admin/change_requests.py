"""Four-eyes configuration changes: propose, read, confirm, reject (the rules are in
`svc_gateway.admin.changes`): a part of `AdminCore`."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session

from assetwithdrawal.admin.v1 import admin_pb2
from svc_gateway.admin import changes
from svc_gateway.admin.base import AdminBase, Done
from svc_gateway.admin.convert import change_to_proto, rotation_to_proto
from svc_gateway.admin.names import (
    STATE_FILTER,
    decode_token,
    encode_token,
    page_size,
    parse_change_name,
    request_id_field,
)
from withdrawal_shared.db import rotation_changes
from withdrawal_shared.db.models import AdminChange, HotWalletRotation, SafeTransaction
from withdrawal_shared.db.operators import OperatorIdentity
from withdrawal_shared.errors import FieldViolation, invalid_argument, not_found


def _operations(session: Session, rows: list[AdminChange]) -> dict[str, SafeTransaction]:
    """The treasury operations the changes among `rows` ordered, by change id."""
    ids = [row.id for row in rows if row.kind.startswith("treasury.")]
    if not ids:
        return {}
    found = session.scalars(select(SafeTransaction).where(SafeTransaction.change_id.in_(ids)))
    return {op.change_id: op for op in found if op.change_id is not None}


def _rotations(session: Session, rows: list[AdminChange]) -> dict[str, admin_pb2.HotWalletRotation]:
    """The key rotations the changes among `rows` started, by change id, with their steps."""
    ids = [row.id for row in rows if row.kind == rotation_changes.KIND]
    if not ids:
        return {}
    found = list(
        session.scalars(select(HotWalletRotation).where(HotWalletRotation.change_id.in_(ids)))
    )
    steps = session.scalars(
        select(SafeTransaction).where(SafeTransaction.rotation_id.in_([r.id for r in found]))
    ).all()
    return {
        r.change_id: rotation_to_proto(r, [op for op in steps if op.rotation_id == r.id])
        for r in found
    }


def _with_operation(session: Session, row: AdminChange) -> admin_pb2.Change:
    return change_to_proto(
        row, _operations(session, [row]).get(row.id), _rotations(session, [row]).get(row.id)
    )


class ChangeRequestsCore(AdminBase):
    async def create_change(
        self, caller: OperatorIdentity, request: admin_pb2.CreateChangeRequest
    ) -> admin_pb2.Change:
        request_id = request_id_field(request.request_id)
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
                return _with_operation(session, row)

        return await self._db(read)

    async def list_changes(
        self, caller: OperatorIdentity, request: admin_pb2.ListChangesRequest
    ) -> admin_pb2.ListChangesResponse:
        size = page_size(request.page_size)
        state: str | None = None
        if request.filter.strip():
            match = STATE_FILTER.match(request.filter)
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
        after = decode_token(request.page_token, request.filter)

        def read() -> admin_pb2.ListChangesResponse:
            self._expire_due()
            query = select(AdminChange).order_by(AdminChange.id.desc()).limit(size + 1)
            if state is not None:
                query = query.where(AdminChange.state == state)
            if after is not None:
                query = query.where(AdminChange.id < after)
            with self.sessions() as session:
                rows = list(session.scalars(query))
                operations = _operations(session, rows[:size])
                rotations = _rotations(session, rows[:size])
            response = admin_pb2.ListChangesResponse(
                changes=[
                    change_to_proto(r, operations.get(r.id), rotations.get(r.id))
                    for r in rows[:size]
                ]
            )
            if len(rows) > size:
                response.next_page_token = encode_token(rows[size - 1].id, request.filter)
            return response

        return await self._db(read)

    async def confirm_change(
        self, caller: OperatorIdentity, request: admin_pb2.ConfirmChangeRequest
    ) -> admin_pb2.Change:
        change_id = parse_change_name(request.name)

        def work(session: Session) -> Done:
            row, effect = changes.confirm(session, self.registry, change_id, caller.operator_id)
            if effect is None:  # already applied: nothing changed now
                return Done(_with_operation(session, row), request.name)
            before: dict[str, Any] = {"change_state": changes.PROPOSED, "target": effect.target}
            after: dict[str, Any] = {"change_state": changes.APPLIED, "target": effect.target}
            before["value"] = dict(effect.before) if effect.before is not None else None
            after["value"] = dict(effect.after) if effect.after is not None else None
            return Done(_with_operation(session, row), request.name, before, after)

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
