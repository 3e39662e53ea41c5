"""Treasury operations as four-eyes changes on a real gateway (MariaDB and SQLite): the payload
checks at proposal, nothing recorded before a second admin confirms, one PENDING Safe
transaction per applied change (shown on the change by GetChange, ListChanges and
ConfirmChange, and in the audit trail), and a chain without a treasury Safe refused."""

from __future__ import annotations

import json
import secrets
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import delete, select

from assetwithdrawal.admin.v1 import admin_pb2
from tests.support.gateway import OperatorAccount, RunningGateway
from tests.support.requests import rich_error
from withdrawal_shared.db.models import AdminAudit, SafeTransaction, SafeTreasury
from withdrawal_shared.db.operators import Role
from withdrawal_shared.db.transitions import utcnow

KIND = "treasury.set_vault_operator"
SAFE = "0x" + "5a" * 20


@pytest.fixture(scope="module")
def alice(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(f"alice-{secrets.token_hex(3)}", Role.ADMIN)


@pytest.fixture(scope="module")
def bob(gateway: RunningGateway) -> OperatorAccount:
    return gateway.add_operator(f"bob-{secrets.token_hex(3)}", Role.ADMIN)


@pytest.fixture
def treasury(gateway: RunningGateway) -> Any:
    with gateway.server.store.sessions.begin() as session:
        if session.get(SafeTreasury, "polygon") is None:
            session.add(
                SafeTreasury(
                    chain="polygon", address=SAFE, threshold=2, create_time=utcnow(), next_nonce=0
                )
            )
    yield
    with gateway.server.store.sessions.begin() as session:
        session.execute(delete(SafeTransaction))
        session.execute(delete(SafeTreasury))


def _operator() -> str:
    return "0x" + secrets.token_hex(20)


def _propose(
    gateway: RunningGateway, who: OperatorAccount, payload: dict[str, Any], kind: str = KIND
) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    change: admin_pb2.Change = gateway.admin.CreateChange(
        admin_pb2.CreateChangeRequest(change=admin_pb2.Change(kind=kind, payload=body)),
        metadata=who.metadata,
    )
    return change


def _confirm(gateway: RunningGateway, who: OperatorAccount, name: str) -> admin_pb2.Change:
    change: admin_pb2.Change = gateway.admin.ConfirmChange(
        admin_pb2.ConfirmChangeRequest(name=name), metadata=who.metadata
    )
    return change


def _operations(gateway: RunningGateway) -> list[SafeTransaction]:
    with gateway.server.store.sessions() as session:
        rows = list(session.scalars(select(SafeTransaction).order_by(SafeTransaction.id)))
        for row in rows:
            session.expunge(row)
        return rows


def test_a_bad_payload_is_refused_field_by_field(
    gateway: RunningGateway, alice: OperatorAccount
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _propose(gateway, alice, {"chain": "polygon", "operator": "0x12", "extra": 1})
    code, _, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(fields) == {
        "change.payload.operator",
        "change.payload.allowed",
        "change.payload.extra",
    }


def test_only_a_confirmed_change_records_an_operation(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount, treasury: Any
) -> None:
    operator = _operator()
    change = _propose(gateway, alice, {"chain": "polygon", "operator": operator, "allowed": True})
    assert change.target == "chains/polygon/vault"
    assert not change.HasField("treasury_operation")
    assert _operations(gateway) == []
    rejected = _propose(
        gateway, alice, {"chain": "polygon", "operator": _operator(), "allowed": True}
    )
    gateway.admin.RejectChange(
        admin_pb2.RejectChangeRequest(name=rejected.name, reason="no"), metadata=bob.metadata
    )
    assert _operations(gateway) == []

    applied = _confirm(gateway, bob, change.name)
    assert applied.state == admin_pb2.Change.STATE_APPLIED
    operation = applied.treasury_operation
    assert operation.state == admin_pb2.TreasuryOperation.STATE_PENDING
    assert not operation.HasField("safe_nonce")  # assigned only when it is about to be signed
    rows = _operations(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert operation.name == f"treasuryOperations/{row.id}"
    assert (row.change_id, row.kind, row.purpose, row.state) == (
        change.name.removeprefix("changes/"),
        KIND,
        "TREASURY",
        "PENDING",
    )
    assert json.loads(row.payload) == {"allowed": True, "chain": "polygon", "operator": operator}

    # Confirming again changes nothing; reads show the operation.
    again = _confirm(gateway, bob, change.name)
    assert again.treasury_operation == operation
    assert len(_operations(gateway)) == 1
    got = gateway.admin.GetChange(
        admin_pb2.GetChangeRequest(name=change.name), metadata=alice.metadata
    )
    assert got.treasury_operation == operation
    listed = gateway.admin.ListChanges(admin_pb2.ListChangesRequest(), metadata=alice.metadata)
    by_name = {c.name: c for c in listed.changes}
    assert by_name[change.name].treasury_operation == operation
    assert not by_name[rejected.name].HasField("treasury_operation")

    with gateway.server.store.sessions() as session:
        entry = session.scalars(
            select(AdminAudit)
            .where(AdminAudit.action == "ConfirmChange", AdminAudit.target == change.name)
            .order_by(AdminAudit.seq)
            .limit(1)
        ).one()  # the first confirmation: the one that applied it
        after = json.loads(entry.after_value or "{}")
    assert after["value"]["treasury_operation"] == operation.name
    assert after["value"]["state"] == "PENDING"


def test_a_chain_without_a_treasury_safe_is_not_applicable(
    gateway: RunningGateway, alice: OperatorAccount, bob: OperatorAccount
) -> None:
    change = _propose(gateway, alice, {"chain": "polygon"}, kind="treasury.pause_vault")
    with pytest.raises(grpc.RpcError) as caught:
        _confirm(gateway, bob, change.name)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "CHANGE_NOT_APPLICABLE"
    assert "no treasury Safe" in (caught.value.details() or "")
    assert _operations(gateway) == []
