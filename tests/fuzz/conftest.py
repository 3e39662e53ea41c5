"""The fuzzers' stack: a real gateway on a MariaDB database of its own and its own
redis-server, a partner with an API key, and a few withdrawals that exist (one cancelled), so
requests can name real resources. One stack for the whole package (starting one takes
seconds); a test that needs a fixed state compares it before and after itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.redis_server import start_redis_server
from svc_gateway.settings import GatewaySettings
from tests.fuzz.stack import REDIS_PREFIX, FuzzStack
from tests.support.databases import mariadb_database
from tests.support.gateway import RunningGateway
from tests.support.requests import create_request
from withdrawal_shared.db.operators import Role


@pytest.fixture(scope="package")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    redis = start_redis_server(tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        with mariadb_database() as url:
            gateway = RunningGateway(
                GatewaySettings(
                    database_url=url,
                    redis_url=redis.url,
                    redis_prefix=REDIS_PREFIX,
                    grpc_port=0,
                    http_port=0,
                    shutdown_grace_seconds=1.0,
                )
            )
            try:
                partner = gateway.add_partner("fuzz-partner")
                requests = [create_request(client_reference=f"seed-{i}") for i in range(3)]
                names = [
                    gateway.stub.CreateWithdrawal(r, metadata=partner.metadata).name
                    for r in requests
                ]
                gateway.stub.CancelWithdrawal(
                    withdrawal_pb2.CancelWithdrawalRequest(name=names[0], reason="seed"),
                    metadata=partner.metadata,
                )
                operator = gateway.add_operator("fuzz-admin", *Role)
                yield FuzzStack(
                    gateway,
                    partner,
                    redis.url,
                    REDIS_PREFIX,
                    names,
                    [r.request_id for r in requests],
                    operator,
                )
            finally:
                gateway.close()
    finally:
        redis.stop()
