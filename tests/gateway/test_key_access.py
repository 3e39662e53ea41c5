"""Scopes and per-key rate limits on a real gateway (both databases, gRPC and REST)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from sqlalchemy import func, select

from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, rich_error
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.scopes import Scope


def _partner(
    gateway: RunningGateway,
    scopes: Iterable[Scope],
    per_second: int | None = None,
    burst: int | None = None,
) -> Partner:
    partner_id = f"access-{secrets.token_hex(3)}"
    with gateway.server.store.sessions.begin() as session:
        ensure_partner(session, partner_id)
        session.flush()
        created = create_api_key(
            session, partner_id, scopes, rate_limit_per_second=per_second, rate_limit_burst=burst
        )
    return Partner(partner_id, created.token)


def _rows(gateway: RunningGateway, partner: Partner) -> int:
    with gateway.server.store.sessions() as session:
        query = select(func.count()).select_from(Withdrawal)
        return int(session.scalar(query.where(Withdrawal.partner_id == partner.id)) or 0)


def _rest_create(gateway: RunningGateway, partner: Partner) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/withdrawals",
        json={"token": "USDC", "recipientAddress": "0x" + secrets.token_hex(20), "amount": "1"},
        headers={**partner.headers, "Idempotency-Key": str(uuid.uuid4())},
    )


def test_a_key_without_the_scope_is_refused_naming_it(gateway: RunningGateway) -> None:
    reader = _partner(gateway, [Scope.WITHDRAWALS_READ])
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(create_request(), metadata=reader.metadata)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.reason == "SCOPE_MISSING"
    assert info.metadata["scope"] == "withdrawals:create"
    assert "withdrawals:create" in caught.value.details()  # type: ignore[attr-defined]
    response = _rest_create(gateway, reader)
    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["reason"] == "SCOPE_MISSING"
    assert _rows(gateway, reader) == 0
    listed = httpx.get(f"{gateway.base_url}/v1/withdrawals", headers=reader.headers)
    assert listed.status_code == 200

    writer = _partner(gateway, [Scope.WITHDRAWALS_CREATE])
    assert _rest_create(gateway, writer).status_code == 200
    listed = httpx.get(f"{gateway.base_url}/v1/withdrawals", headers=writer.headers)
    assert listed.status_code == 403
    assert listed.json()["error"]["details"][0]["metadata"]["scope"] == "withdrawals:read"


def test_over_the_limit_creates_are_refused_and_store_nothing(gateway: RunningGateway) -> None:
    partner = _partner(gateway, [Scope.WITHDRAWALS_CREATE], per_second=1, burst=3)

    def create(_: int) -> grpc.RpcError | None:
        try:
            gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
        except grpc.RpcError as exc:
            return exc
        return None

    with ThreadPoolExecutor(6) as pool:  # concurrent: most share group commits
        outcomes = list(pool.map(create, range(6)))
    refused = [exc for exc in outcomes if exc is not None]
    assert len(refused) == 3
    assert _rows(gateway, partner) == 3
    for exc in refused:
        code, info, _ = rich_error(exc)
        assert (code, info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert int(info.metadata["retry_after"]) >= 1
        trailing = dict(exc.trailing_metadata())  # type: ignore[attr-defined]
        assert trailing["retry-after"] == info.metadata["retry_after"]
        assert trailing["ratelimit-limit"] == "3"
    response = _rest_create(gateway, partner)
    assert response.status_code == 429
    assert response.json()["error"]["details"][0]["reason"] == "RATE_LIMITED"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == "3"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= 1
    assert _rows(gateway, partner) == 3


def test_reads_are_charged_to_the_same_limit(gateway: RunningGateway) -> None:
    partner = _partner(gateway, [Scope.WITHDRAWALS_READ], per_second=1, burst=2)
    url = f"{gateway.base_url}/v1/withdrawals"
    statuses = [httpx.get(url, headers=partner.headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_limiter_charges_one_bucket_or_several_and_reloads_a_lost_script(
    redis_url: str, redis_prefix: str
) -> None:
    """On the real Redis: one bucket is charged as a single script call, several in one
    pipeline; either reloads the script when Redis no longer has it (a restart, SCRIPT FLUSH)."""
    import asyncio

    import redis.asyncio as aioredis

    from svc_gateway.rate_limit import RateLimit, RateLimiter
    from withdrawal_shared.errors import ApiError

    a, b = RateLimit("key:a", 1, 2), RateLimit("key:b", 1, 1)

    async def run() -> tuple[list[ApiError | None], list[ApiError | None]]:
        client = aioredis.from_url(redis_url)
        try:
            limiter = RateLimiter(client, redis_prefix)
            limiter._sha = "0" * 40  # a script Redis does not have
            one = await limiter.admit([a, a, a])
            limiter._sha = "0" * 40
            several = await limiter.admit([b, None, b, a])
            return one, several
        finally:
            await client.aclose()

    one, several = asyncio.run(run())
    reasons = [None if e is None else e.reason for e in [*one, *several]]
    assert reasons == [None, None, "RATE_LIMITED", None, None, "RATE_LIMITED", "RATE_LIMITED"]
    assert one[2] is not None and one[2].headers["retry-after"] == "1"
