"""Revocation and rate limits across gateway processes: GATEWAY_WORKERS=2 as real processes
sharing the ports (the kernel spreads connections between them), one Redis and one database."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from bench.api_load import GatewayProcess
from tests.support.requests import rich_error
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.key_revocation import revoke_key
from withdrawal_shared.scopes import DEFAULT_SCOPES


@dataclass
class Workers:
    gateway: GatewayProcess
    database_url: str
    redis_url: str
    redis_prefix: str

    def new_key(self, per_second: int | None = None, burst: int | None = None) -> tuple[str, str]:
        """(partner id, token) of a new partner's key."""
        partner_id = f"workers-{secrets.token_hex(3)}"
        engine = make_engine(self.database_url, pool_size=1)
        try:
            with make_sessionmaker(engine).begin() as session:
                ensure_partner(session, partner_id)
                session.flush()
                created = create_api_key(
                    session,
                    partner_id,
                    DEFAULT_SCOPES,
                    rate_limit_per_second=per_second,
                    rate_limit_burst=burst,
                )
        finally:
            engine.dispose()
        return partner_id, created.token

    def rows(self, partner_id: str) -> int:
        engine = make_engine(self.database_url, pool_size=1)
        try:
            with make_sessionmaker(engine)() as session:
                query = select(func.count()).select_from(Withdrawal)
                return int(session.scalar(query.where(Withdrawal.partner_id == partner_id)) or 0)
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, module_redis_prefix: str
) -> Iterator[Workers]:
    tmp = tmp_path_factory.mktemp("key-workers")
    database_url = f"sqlite:///{tmp / 'gateway.db'}"
    upgrade(database_url)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": module_redis_prefix,
        "GATEWAY_WORKERS": "2",
    }
    gateway = GatewayProcess(env, tmp / "gateway.log", "", redis_url)
    try:
        gateway.wait_serving()
        deadline = time.monotonic() + 60
        while gateway.log_path.read_text().count('"msg":"gateway serving"') < 2:
            assert time.monotonic() < deadline, gateway.log_tail()
            time.sleep(0.2)
        yield Workers(gateway, database_url, redis_url, module_redis_prefix)
    finally:
        assert gateway.stop() == 0


def _list_on_new_connection(target: str, token: str) -> grpc.StatusCode:
    """ListWithdrawals on a connection of its own (so the kernel may pick either worker)."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(ch)
        try:
            stub.ListWithdrawals(
                withdrawal_pb2.ListWithdrawalsRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        except grpc.RpcError as exc:
            return rich_error(exc)[0]
        return grpc.StatusCode.OK


def _revoke(workers: Workers, partner_id: str, prefix: str) -> bool:
    async def run() -> bool:
        client = aioredis.from_url(workers.redis_url)
        engine = make_engine(workers.database_url, pool_size=1)
        try:
            revocation = await revoke_key(
                make_sessionmaker(engine), client, workers.redis_prefix, partner_id, prefix
            )
        finally:
            await client.aclose()
            engine.dispose()
        assert revocation is not None
        return revocation.published

    return asyncio.run(run())


def test_a_revoked_key_is_refused_by_every_worker_within_two_seconds(workers: Workers) -> None:
    partner_id, token = workers.new_key()
    target = workers.gateway.grpc_target
    # Sixteen connections: each worker verifies (and caches) the key on some of them.
    assert {_list_on_new_connection(target, token) for _ in range(16)} == {grpc.StatusCode.OK}
    revoked_at = time.monotonic()
    assert _revoke(workers, partner_id, "_".join(token.split("_")[:2]))
    codes: list[grpc.StatusCode] = []
    while time.monotonic() - revoked_at < 2.0:
        codes = [_list_on_new_connection(target, token) for _ in range(16)]
        if set(codes) == {grpc.StatusCode.UNAUTHENTICATED}:
            break
        time.sleep(0.05)
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    assert time.monotonic() - revoked_at < 2.0


def _create(rest_url: str, token: str) -> tuple[int, dict[str, str]]:
    """A REST create on a connection of its own: (status, headers by lowercase name)."""
    request = urllib.request.Request(
        f"{rest_url}/v1/withdrawals",
        data=json.dumps(
            {"token": "USDC", "recipientAddress": "0x" + secrets.token_hex(20), "amount": "1"}
        ).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
            "Connection": "close",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def test_a_burst_over_the_limit_is_refused_across_workers_and_stores_nothing(
    workers: Workers,
) -> None:
    partner_id, token = workers.new_key(per_second=1, burst=4)
    rest_url = workers.gateway.rest_url
    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(lambda _: _create(rest_url, token), range(12)))
    admitted = [headers for status, headers in outcomes if status == 200]
    refused = [headers for status, headers in outcomes if status == 429]
    assert len(admitted) + len(refused) == 12, outcomes
    assert 4 <= len(admitted) <= 5  # the burst, plus one if a second passed meanwhile
    assert workers.rows(partner_id) == len(admitted)
    retry_after = 0
    for headers in refused:
        retry_after = max(retry_after, int(headers["retry-after"]))
        assert headers["ratelimit-limit"] == "4"
        assert int(headers["ratelimit-remaining"]) == 0
        assert int(headers["ratelimit-reset"]) >= 1
    assert 1 <= retry_after <= 2
    time.sleep(retry_after)
    status, _ = _create(rest_url, token)
    assert status == 200
    assert workers.rows(partner_id) == len(admitted) + 1


def test_every_worker_subscribes_to_the_revocation_channel(workers: Workers) -> None:
    log = workers.gateway.log_path.read_text()
    assert log.count('"msg":"revocation channel subscribed"') >= 2
