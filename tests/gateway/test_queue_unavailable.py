"""With Redis down the gateway still accepts withdrawals: the database is the source of
truth, and the processor's sweeper re-drives what the queue never received."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from svc_gateway.settings import GatewaySettings
from tests.support.databases import sqlite_database
from tests.support.gateway import RunningGateway
from tests.support.requests import create_request
from withdrawal_shared.db.models import Withdrawal


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gateway_without_redis(tmp_path: Path) -> Iterator[RunningGateway]:
    with sqlite_database(tmp_path) as url:
        running = RunningGateway(
            GatewaySettings(
                database_url=url,
                redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
                grpc_port=0,
                http_port=0,
                shutdown_grace_seconds=1.0,
            )
        )
        yield running
        running.close()


def test_create_succeeds_and_is_stored_when_redis_is_down(
    gateway_without_redis: RunningGateway,
) -> None:
    partner = gateway_without_redis.add_partner("no-redis")
    created = gateway_without_redis.stub.CreateWithdrawal(
        create_request(), metadata=partner.metadata, timeout=15
    )
    with gateway_without_redis.server.store.sessions() as session:
        row = session.get(Withdrawal, created.name.split("/")[1])
        assert row is not None and row.state == "RECEIVED"
