"""RpcPool retries a round in which no provider answered, a bounded number of times, with
jittered exponential backoff; an answer (even a JSON-RPC error) is never retried."""

from __future__ import annotations

import random
import threading

import pytest

from chaos.fault_proxy import FaultProxy, FaultRates
from devstack.anvil import AnvilProcess
from withdrawal_shared.chain.rpc_pool import RpcErrorResponse, RpcPool, RpcUnavailable
from withdrawal_shared.retry import jittered_backoff

pytestmark = pytest.mark.chain


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    delays = jittered_backoff(0.1, 0.8, random.Random(7))
    drawn = [next(delays) for _ in range(200)]
    bounds = [0.1, 0.2, 0.4] + [0.8] * 197
    assert all(0.0 <= d <= b for d, b in zip(drawn, bounds, strict=True))
    assert max(drawn[3:]) > 0.4  # it does reach past the third bound once capped at 0.8
    assert len(set(drawn)) == len(drawn)  # jittered, not a fixed ladder
    with pytest.raises(ValueError):
        next(jittered_backoff(0.0, 1.0))


def test_a_round_without_answer_is_retried_then_raised(anvil: AnvilProcess) -> None:
    with FaultProxy(anvil.rpc_url, FaultRates(http_5xx=1.0), seed=1) as proxy:
        pool = RpcPool([proxy.url], retries=2, retry_initial=0.01, retry_max=0.02, fail_max=10)
        with pytest.raises(RpcUnavailable):
            pool.call("eth_chainId")
        assert proxy.counts()["http_5xx"] == 3  # the first round and two retries


def test_a_blip_shorter_than_the_retries_is_invisible(anvil: AnvilProcess) -> None:
    with FaultProxy(anvil.rpc_url, FaultRates(http_5xx=1.0), seed=2) as proxy:
        pool = RpcPool([proxy.url], retries=3, retry_initial=0.2, retry_max=0.2, fail_max=10)
        heal = threading.Timer(0.05, proxy.set_rates, args=(FaultRates(),))
        heal.start()
        try:
            assert pool.call("eth_chainId") == "0x89"
        finally:
            heal.cancel()
        assert proxy.counts()["http_5xx"] >= 1


def test_an_error_answer_is_not_retried(anvil: AnvilProcess) -> None:
    with FaultProxy(anvil.rpc_url, seed=3) as proxy:
        pool = RpcPool([proxy.url], retries=3, retry_initial=0.01, retry_max=0.02)
        with pytest.raises(RpcErrorResponse):
            pool.call("eth_sendRawTransaction", ["0x00"])
        assert proxy.counts()["requests"] == 1
