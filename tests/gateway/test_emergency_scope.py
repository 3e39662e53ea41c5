"""An EMERGENCY CreateWithdrawal needs the `emergency` scope besides `withdrawals:create`:
without it the request is PERMISSION_DENIED (403 on REST) `SCOPE_MISSING` naming the scope, and
nothing is stored; with it the withdrawal's first audit row says it was an emergency request,
naming the key. Other priorities need no more than before. Real gateway, MariaDB and SQLite."""

from __future__ import annotations

import secrets
import uuid

import grpc
import httpx
import pytest
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.store import EMERGENCY_REASON
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address, rich_error
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import verify_audit_chain
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope

S = withdrawal_pb2


@pytest.fixture(scope="module")
def plain(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(f"plain-{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def trusted(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(
        f"trusted-{secrets.token_hex(3)}", DEFAULT_SCOPES | {Scope.EMERGENCY}
    )


def _count(gateway: RunningGateway, partner: Partner) -> int:
    with gateway.server.store.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.partner_id == partner.id)
            )
            or 0
        )


def test_grpc_emergency_without_the_scope_is_denied_and_stores_nothing(
    gateway: RunningGateway, plain: Partner
) -> None:
    request = create_request(priority=S.PRIORITY_EMERGENCY)
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(request, metadata=plain.metadata)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.reason == "SCOPE_MISSING"
    assert dict(info.metadata) == {"scope": "emergency", "method": "CreateWithdrawal"}
    assert "'emergency'" in caught.value.details()
    assert _count(gateway, plain) == 0
    # The same key may still create a STANDARD or PRIORITY withdrawal.
    for priority in (S.PRIORITY_STANDARD, S.PRIORITY_PRIORITY):
        made = gateway.stub.CreateWithdrawal(
            create_request(priority=priority), metadata=plain.metadata
        )
        assert made.priority == priority
    assert _count(gateway, plain) == 2


def test_rest_emergency_without_the_scope_is_403(gateway: RunningGateway, plain: Partner) -> None:
    before = _count(gateway, plain)
    response = httpx.post(
        f"{gateway.base_url}/v1/withdrawals",
        headers={**plain.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "token": "USDC",
            "recipientAddress": fresh_address(),
            "amount": "1",
            "priority": "PRIORITY_EMERGENCY",
        },
    )
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    info = next(d for d in error["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "SCOPE_MISSING"
    assert info["metadata"]["scope"] == "emergency"
    assert _count(gateway, plain) == before


def test_emergency_with_the_scope_is_audited_as_such(
    gateway: RunningGateway, trusted: Partner
) -> None:
    made = gateway.stub.CreateWithdrawal(
        create_request(priority=S.PRIORITY_EMERGENCY), metadata=trusted.metadata
    )
    assert made.priority == S.PRIORITY_EMERGENCY
    withdrawal_id = made.name.removeprefix("withdrawals/")
    prefix = "_".join(trusted.api_key.split("_")[:2])
    with gateway.server.store.sessions() as session:
        (audit,) = session.scalars(
            select(WithdrawalAudit).where(WithdrawalAudit.withdrawal_id == withdrawal_id)
        ).all()
        assert audit.reason == EMERGENCY_REASON
        assert "EMERGENCY" in audit.message and prefix in audit.message
        assert trusted.api_key not in audit.message
        assert verify_audit_chain(session, withdrawal_id)
    # A STANDARD one from the same key is audited as before.
    plain_made = gateway.stub.CreateWithdrawal(create_request(), metadata=trusted.metadata)
    with gateway.server.store.sessions() as session:
        (audit,) = session.scalars(
            select(WithdrawalAudit).where(
                WithdrawalAudit.withdrawal_id == plain_made.name.removeprefix("withdrawals/")
            )
        ).all()
        assert audit.reason == ""
