"""RPC failover on the real pipeline: the processor and the monitor are given a dead provider
FIRST in CHAIN_RPC_URL (a closed port on 127.0.0.1), before anvil. Reads fail over to anvil,
broadcasts go to every healthy provider, and the dead provider's circuit breaker opens."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from eth_typing import HexStr
from web3 import Web3
from web3.exceptions import ContractLogicError

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_monitor.server import MonitorServer
from svc_processor.chain_reads import ChainReads
from svc_processor.errors import TransientError
from svc_processor.server import ProcessorServer
from tests.e2e.conftest import keystore_signer
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.chain.rpc_pool import (
    PoolProvider,
    PoolUnavailableError,
    ProviderHealth,
    RpcPool,
)

S = withdrawal_pb2


def _closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def dead_url() -> str:
    return _closed_port_url()


@pytest.fixture(scope="module")
def failover_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    dead_url: str,
) -> Iterator[Pipeline]:
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            e2e_database, redis_url, module_redis_prefix, target, extra_rpc_urls=[dead_url]
        ) as pipeline,
    ):
        yield pipeline


def _pools(p: Pipeline) -> dict[str, RpcPool]:
    processor = p.processor.server
    monitor = p.monitor.server
    assert isinstance(processor, ProcessorServer) and isinstance(monitor, MonitorServer)
    return {"processor": processor.rpc_pool, "monitor": monitor.rpc_pool}


def _by_url(pool: RpcPool) -> dict[str, ProviderHealth]:
    return {h.url: h for h in pool.health()}


def test_withdrawal_completes_with_a_dead_primary_provider(
    failover_pipeline: Pipeline, dead_url: str
) -> None:
    p = failover_pipeline
    pools = _pools(p)
    for name, pool in pools.items():
        assert pool.urls == (dead_url, p.anvil.rpc_url), name
    # Broadcasts go through the pool (to every healthy provider), not through web3 alone.
    processor = p.processor.server
    assert isinstance(processor, ProcessorServer)
    assert processor.pipeline.payouts.pool is pools["processor"]

    recipient = fresh_address()
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount="3.25", recipient=recipient), metadata=p.partner.metadata
    )
    done = p.wait_for_state(created.name, S.STATE_COMPLETED, timeout=90)
    assert p.token_balance(recipient) == 3_250_000  # read from the chain
    receipt = p.w3.eth.get_transaction_receipt(done.transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1

    for name, pool in pools.items():

        def dead_is_open(pool: RpcPool = pool) -> ProviderHealth | None:
            dead = _by_url(pool)[dead_url]
            return dead if dead.state == "open" else None

        def describe(name: str = name, pool: RpcPool = pool) -> str:
            return f"{name}: the dead provider's breaker is not open: {pool.health()}"

        dead = wait_until(dead_is_open, 15, describe)
        assert dead.failures >= 3 and dead.successes == 0, (name, dead)
        assert dead.last_error is not None
        live = _by_url(pool)[p.anvil.rpc_url]
        assert live.state == "closed" and live.successes > 0 and live.failures == 0, (name, live)


def test_pool_provider_keeps_web3_errors(failover_pipeline: Pipeline, dead_url: str) -> None:
    """Through the pool, a revert is still web3's ContractLogicError (an answer, no failover),
    and no provider answering is an OSError the processor's reads treat as transient."""
    p = failover_pipeline
    processor = p.processor.server
    assert isinstance(processor, ProcessorServer)
    w3 = processor.pipeline.payouts.w3
    token = Web3.to_checksum_address(p.boot.token_address)
    with pytest.raises(ContractLogicError):
        w3.eth.call({"to": token, "data": HexStr("0xdeadbeef")})

    dead = ChainReads(Web3(PoolProvider(RpcPool([dead_url], request_timeout=1.0))))
    with pytest.raises(TransientError, match="no RPC provider answered"):
        dead.native_balance(p.hot_wallet)
    with pytest.raises(PoolUnavailableError):
        dead.w3.eth.get_block_number()
