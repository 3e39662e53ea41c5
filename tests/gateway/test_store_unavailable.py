"""When the database does not answer in time (here the withdrawals table is locked past the
gateway sessions' lock wait timeout, on the real MariaDB), a create is answered UNAVAILABLE
(HTTP 503) with Retry-After and the trace id, not INTERNAL, and nothing is stored; the same
request sent again once the lock is gone is stored once."""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import grpc
import httpx
import pytest
from sqlalchemy import create_engine, func, select

from svc_gateway.settings import GatewaySettings
from tests.support.databases import mariadb_database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address, rich_error
from withdrawal_shared.db.models import Withdrawal

# Every session of the gateway gives up on a lock after 1 s (the default is 50 s).
SHORT_WAITS = quote("SET SESSION innodb_lock_wait_timeout = 1, lock_wait_timeout = 1")


@dataclass
class Stack:
    gateway: RunningGateway
    database_url: str
    partner: Partner


@pytest.fixture(scope="module")
def stack(redis_url: str, module_redis_prefix: str) -> Iterator[Stack]:
    with mariadb_database() as url:
        running = RunningGateway(
            GatewaySettings(
                database_url=f"{url}&init_command={SHORT_WAITS}",
                redis_url=redis_url,
                redis_prefix=module_redis_prefix,
                grpc_port=0,
                http_port=0,
                shutdown_grace_seconds=1.0,
            )
        )
        try:
            yield Stack(running, url, running.add_partner(f"p-{secrets.token_hex(3)}"))
        finally:
            running.close()


@contextlib.contextmanager
def withdrawals_locked(database_url: str) -> Iterator[None]:
    """The withdrawals table write-locked by a session of the test's own."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("LOCK TABLES withdrawals WRITE")
            try:
                yield
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")
    finally:
        engine.dispose()


def stored(stack: Stack) -> int:
    with stack.gateway.server.store.sessions() as session:
        query = select(func.count()).select_from(Withdrawal)
        return int(session.scalar(query.where(Withdrawal.partner_id == stack.partner.id)) or 0)


def test_grpc_create_is_unavailable_then_stored_once(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    request = create_request()
    before = stored(stack)
    with (
        caplog.at_level(logging.WARNING),
        withdrawals_locked(stack.database_url),
        pytest.raises(grpc.RpcError) as caught,
    ):
        stack.gateway.stub.CreateWithdrawal(request, metadata=stack.partner.metadata, timeout=30)
    code, info, _ = rich_error(caught.value)
    assert (code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    assert info.metadata["retry_after"] == "1" and len(info.metadata["trace_id"]) == 32
    assert ("retry-after", "1") in caught.value.trailing_metadata()  # type: ignore[attr-defined]
    assert info.metadata["trace_id"] in caught.value.details()  # type: ignore[attr-defined]
    assert stored(stack) == before
    # Logged as a warning with the driver's error number, no stack and no statement.
    warnings = [r for r in caplog.records if "answered UNAVAILABLE" in r.getMessage()]
    assert warnings and all(r.exc_info is None for r in warnings)
    assert "1205" in warnings[0].getMessage() and "INSERT" not in warnings[0].getMessage()

    created = stack.gateway.stub.CreateWithdrawal(
        request, metadata=stack.partner.metadata, timeout=30
    )
    again = stack.gateway.stub.CreateWithdrawal(
        request, metadata=stack.partner.metadata, timeout=30
    )
    assert created.name == again.name
    assert stored(stack) == before + 1


def test_rest_create_is_503_with_retry_after_then_stored_once(stack: Stack) -> None:
    headers = {**stack.partner.headers, "Idempotency-Key": str(uuid.uuid4())}
    payload = {"token": "USDC", "recipientAddress": fresh_address(), "amount": "12.5"}
    url = f"{stack.gateway.base_url}/v1/withdrawals"
    before = stored(stack)
    with withdrawals_locked(stack.database_url):
        response = httpx.post(url, json=payload, headers=headers, timeout=30)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    error = response.json()["error"]
    assert error["status"] == "UNAVAILABLE"
    [info] = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] == "UNAVAILABLE"
    assert response.headers["x-trace-id"] == info["metadata"]["trace_id"]
    assert "Traceback" not in response.text and "INSERT" not in response.text
    assert stored(stack) == before

    first = httpx.post(url, json=payload, headers=headers, timeout=30)
    repeat = httpx.post(url, json=payload, headers=headers, timeout=30)
    assert first.status_code == repeat.status_code == 200
    assert first.json()["name"] == repeat.json()["name"]
    assert stored(stack) == before + 1
