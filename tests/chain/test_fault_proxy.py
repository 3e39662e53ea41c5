"""FaultProxy in front of a real anvil: each fault's observable effect on clients and chain."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import RPCEndpoint

from chaos.fault_proxy import (
    COUNT_KEYS,
    FaultProxy,
    FaultProxyError,
    FaultRates,
)
from devstack.anvil import REPO_ROOT, AnvilProcess, mine, set_automine
from withdrawal_shared.chain.rpc_pool import RpcPool

pytestmark = pytest.mark.chain

CHAIN_ID_HEX = "0x89"
JSON = {"Content-Type": "application/json"}


def _call(method: str, params: list[Any] | None = None, call_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}


def _post(url: str, payload: Any, timeout: float = 5.0) -> requests.Response:
    return requests.post(url, data=json.dumps(payload), headers=JSON, timeout=timeout)


def _transfer(node: AnvilProcess, w3: Web3, value: int = 1) -> bytes:
    sender, recipient = node.accounts[0], node.accounts[1]
    signed = Account.sign_transaction(
        {
            "type": 2,
            "chainId": 137,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "to": recipient.address,
            "value": value,
            "gas": 21_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 2 * 10**9,
        },
        sender.private_key,
    )
    raw: bytes = signed.raw_transaction
    return raw


def _send_raw(raw: bytes) -> dict[str, Any]:
    return _call("eth_sendRawTransaction", [Web3.to_hex(raw)])


def _known(w3: Web3, raw: bytes) -> bool:
    try:
        w3.eth.get_transaction(Web3.keccak(raw))
    except TransactionNotFound:
        return False
    return True


def _faults(proxy: FaultProxy) -> dict[str, int]:
    return {k: v for k, v in proxy.counts().items() if v}


@pytest.fixture
def proxy(anvil: AnvilProcess) -> Iterator[FaultProxy]:
    with FaultProxy(anvil.rpc_url, seed=7) as started:
        yield started


@pytest.fixture
def manual_mining(w3: Web3) -> Iterator[Web3]:
    """The session anvil without automine (transactions stay pending until `mine`)."""
    set_automine(w3, False)
    yield w3
    set_automine(w3, True)


# -- pass-through --------------------------------------------------------------------------


def test_forwards_single_batch_and_malformed_bodies_exactly(
    anvil: AnvilProcess, w3: Web3, proxy: FaultProxy
) -> None:
    bodies = [
        json.dumps(_call("eth_chainId")).encode(),
        json.dumps([_call("eth_chainId", call_id=1), _call("eth_blockNumber", call_id=2)]).encode(),
        b"{not json",
        b'{"jsonrpc": "2.0", "id": 3, "method": "no_suchMethod", "params": []}',
    ]
    for body in bodies:
        proxied = requests.post(proxy.url, data=body, headers=JSON, timeout=5)
        direct = requests.post(anvil.rpc_url, data=body, headers=JSON, timeout=5)
        assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content)
        assert proxied.headers["Content-Type"] == direct.headers["Content-Type"]

    batch = _post(proxy.url, [_call("eth_chainId", call_id=1), _call("eth_blockNumber", call_id=2)])
    first, second = batch.json()
    assert first == {"jsonrpc": "2.0", "id": 1, "result": CHAIN_ID_HEX}
    assert int(second["result"], 16) == w3.eth.block_number
    assert proxy.counts() == dict.fromkeys(COUNT_KEYS, 0) | {"requests": 5, "forwarded": 5}
    assert Web3(Web3.HTTPProvider(proxy.url)).eth.chain_id == 137


# -- http_5xx ------------------------------------------------------------------------------


def test_http_5xx_is_not_forwarded_and_rpc_pool_fails_over(
    anvil: AnvilProcess, w3: Web3, proxy: FaultProxy
) -> None:
    proxy.set_rates(FaultRates(http_5xx=1.0))
    raw = _transfer(anvil, w3)

    answer = _post(proxy.url, _send_raw(raw))
    assert answer.status_code in (502, 503)
    assert not _known(w3, raw)  # never reached the node

    pool = RpcPool([proxy.url, anvil.rpc_url], fail_max=5)
    assert pool.call("eth_chainId") == CHAIN_ID_HEX
    faulty, healthy = pool.health()
    assert (faulty.failures, faulty.successes) == (1, 0)
    assert faulty.last_error is not None and faulty.last_error.startswith("HTTP 50")
    assert healthy.successes == 1
    assert _faults(proxy) == {"requests": 2, "http_5xx": 2}


# -- reset ---------------------------------------------------------------------------------


def test_reset_aborts_the_connection_without_forwarding(
    anvil: AnvilProcess, w3: Web3, proxy: FaultProxy
) -> None:
    proxy.set_rates(FaultRates(reset=1.0))
    raw = _transfer(anvil, w3)

    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        _post(proxy.url, _send_raw(raw))
    assert not _known(w3, raw)

    pool = RpcPool([proxy.url, anvil.rpc_url])
    assert pool.call("eth_chainId") == CHAIN_ID_HEX
    assert "ConnectionError" in (pool.health()[0].last_error or "")
    assert _faults(proxy) == {"requests": 2, "reset": 2}


# -- timeout_after_forward -----------------------------------------------------------------


def test_timeout_after_forward_times_the_client_out_but_the_node_got_it(
    anvil: AnvilProcess, w3: Web3, proxy: FaultProxy
) -> None:
    # The proxy holds for 30 s; the clients give up after 0.3 s (and stop() ends the hang).
    proxy.set_rates(FaultRates(timeout_after_forward=1.0, hang_seconds=30.0))
    raw = _transfer(anvil, w3)

    with pytest.raises(requests.ReadTimeout):
        _post(proxy.url, _send_raw(raw), timeout=0.3)
    assert w3.eth.get_transaction_receipt(Web3.keccak(raw))["status"] == 1

    second = _transfer(anvil, w3, value=2)
    outcome = RpcPool([proxy.url], request_timeout=0.3).send_raw_transaction(second)
    assert (outcome.status, outcome.maybe_sent) == ("unavailable", True)
    assert w3.eth.get_transaction_receipt(outcome.tx_hash)["status"] == 1
    assert _faults(proxy) == {"requests": 2, "forwarded": 2, "timeout_after_forward": 2}


def test_timeout_after_forward_closes_without_a_response_after_the_hang(
    proxy: FaultProxy,
) -> None:
    proxy.set_rates(FaultRates(timeout_after_forward=1.0, hang_seconds=0.3))
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError, match="without response"):
        _post(proxy.url, _call("eth_chainId"), timeout=5.0)
    assert time.monotonic() - started >= 0.3


# -- drop_tx -------------------------------------------------------------------------------


def test_drop_tx_answers_the_hash_but_the_transaction_is_gone(
    anvil: AnvilProcess, manual_mining: Web3, proxy: FaultProxy
) -> None:
    w3 = manual_mining
    sender = anvil.accounts[0].address
    nonce = w3.eth.get_transaction_count(sender)
    proxy.set_rates(FaultRates(drop_tx=1.0))
    raw = _transfer(anvil, w3)
    tx_hash = Web3.to_hex(Web3.keccak(raw))

    answer = _post(proxy.url, _send_raw(raw)).json()
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": tx_hash}
    lookup = w3.provider.make_request(RPCEndpoint("eth_getTransactionByHash"), [tx_hash])
    assert lookup["result"] is None
    mine(w3, 2)
    assert not _known(w3, raw)
    assert w3.eth.get_transaction_count(sender) == nonce  # never mined
    assert _faults(proxy) == {"requests": 1, "forwarded": 1, "drop_tx": 1}

    # Reads and rejected sends pass through untouched, and nothing more is counted as dropped.
    assert _post(proxy.url, _call("eth_chainId")).json()["result"] == CHAIN_ID_HEX
    rejected = _post(proxy.url, _call("eth_sendRawTransaction", ["0x1234"])).json()
    assert "error" in rejected
    assert proxy.counts()["drop_tx"] == 1

    # The same bytes sent without the fault stay pending and mine: it was the drop.
    proxy.set_rates(FaultRates())
    assert _post(proxy.url, _send_raw(raw)).json()["result"] == tx_hash
    assert _known(w3, raw)
    mine(w3)
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1


def test_drop_tx_in_a_batch_drops_each_accepted_transaction(
    anvil: AnvilProcess, manual_mining: Web3, proxy: FaultProxy
) -> None:
    w3 = manual_mining
    first = _transfer(anvil, w3)
    proxy.set_rates(FaultRates(drop_tx=1.0))
    answers = _post(proxy.url, [_call("eth_chainId", call_id=1), _send_raw(first) | {"id": 2}])
    chain_id, sent = answers.json()
    assert chain_id["result"] == CHAIN_ID_HEX
    assert sent["result"] == Web3.to_hex(Web3.keccak(first))
    assert not _known(w3, first)
    assert proxy.counts()["drop_tx"] == 1


# -- delay ---------------------------------------------------------------------------------


def test_delay_slows_requests_and_answers_correctly(proxy: FaultProxy) -> None:
    proxy.set_rates(FaultRates(delay=1.0, delay_max_seconds=0.4))
    started = time.monotonic()
    for _ in range(5):
        assert _post(proxy.url, _call("eth_chainId")).json()["result"] == CHAIN_ID_HEX
    # Five pauses uniform in 0..0.4 s (seeded): about 1 s in all, far above a plain forward.
    assert time.monotonic() - started >= 0.3
    assert _faults(proxy) == {"requests": 5, "forwarded": 5, "delay": 5}


# -- runtime control -----------------------------------------------------------------------


def test_set_rates_switches_faults_at_runtime_and_methods_restrict_them(
    proxy: FaultProxy,
) -> None:
    chain_id, block_number = _call("eth_chainId"), _call("eth_blockNumber")
    assert _post(proxy.url, block_number).status_code == 200

    proxy.set_rates(FaultRates(reset=1.0, methods=frozenset({"eth_blockNumber"})))
    assert _post(proxy.url, chain_id).json()["result"] == CHAIN_ID_HEX
    with pytest.raises(requests.ConnectionError):
        _post(proxy.url, block_number)
    with pytest.raises(requests.ConnectionError):  # a batch is eligible if any call is
        _post(proxy.url, [chain_id, block_number | {"id": 2}])
    assert _faults(proxy) == {"requests": 4, "forwarded": 2, "reset": 2}

    proxy.set_rates(FaultRates())
    assert _post(proxy.url, block_number).status_code == 200
    proxy.reset_counts()
    assert proxy.counts() == dict.fromkeys(COUNT_KEYS, 0)


def test_same_seed_same_faults(anvil: AnvilProcess) -> None:
    def outcomes(seed: int) -> list[str]:
        seen = []
        with FaultProxy(anvil.rpc_url, FaultRates(reset=0.3, http_5xx=0.3), seed=seed) as p:
            for _ in range(20):
                try:
                    seen.append(str(_post(p.url, _call("eth_chainId")).status_code))
                except requests.ConnectionError:
                    seen.append("reset")
        return seen

    first = outcomes(42)
    assert first == outcomes(42)
    assert {"200", "reset"} <= set(first) and set(first) & {"502", "503"}


def test_concurrent_clients_every_request_accounted_for(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.set_rates(
        FaultRates(
            delay=0.2,
            delay_max_seconds=0.02,
            http_5xx=0.2,
            reset=0.2,
            timeout_after_forward=0.1,
            hang_seconds=0.05,
        )
    )
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:  # keep-alive reuse across faults
            for _ in range(15):
                try:
                    answer = session.post(
                        proxy.url, data=json.dumps(_call("eth_chainId")), headers=JSON, timeout=5
                    )
                    ok = answer.status_code == 200 and answer.json()["result"] == CHAIN_ID_HEX
                    outcome = "ok" if ok else str(answer.status_code)
                except requests.ConnectionError:
                    outcome = "no answer"
                with lock:
                    seen[outcome] += 1

    with caplog.at_level(logging.WARNING):
        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    counts = proxy.counts()
    assert sum(seen.values()) == counts["requests"] == 240
    assert seen["502"] + seen["503"] == counts["http_5xx"]
    assert seen["no answer"] == counts["reset"] + counts["timeout_after_forward"]
    assert seen["ok"] == counts["forwarded"] - counts["timeout_after_forward"]
    assert counts["forwarded"] == 240 - counts["http_5xx"] - counts["reset"]
    assert all(counts[kind] > 0 for kind in ("delay", "http_5xx", "reset"))
    assert counts["timeout_after_forward"] > 0
    assert counts["upstream_errors"] == 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiohttp")] == []


# -- lifecycle and configuration -------------------------------------------------------------


def test_stop_ends_hanging_requests_closes_the_port_and_the_thread(anvil: AnvilProcess) -> None:
    proxy = FaultProxy(anvil.rpc_url, FaultRates(timeout_after_forward=1.0, hang_seconds=60))
    proxy.start()
    port = proxy.port
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            _post(proxy.url, _call("eth_chainId"), timeout=60)
        except requests.RequestException as exc:
            errors.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    deadline = time.monotonic() + 5
    while proxy.counts()["timeout_after_forward"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)

    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3.0
    holder.join(5)
    assert not holder.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)
    assert not any(t.name == "fault-proxy" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(FaultProxyError):
        _ = proxy.url
    proxy.stop()  # idempotent


def test_upstream_down_answers_502_and_counts_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with FaultProxy(dead) as proxy:
        assert _post(proxy.url, _call("eth_chainId")).status_code == 502
        assert _faults(proxy) == {"requests": 1, "upstream_errors": 1}


def test_rejects_bad_rates_and_non_loopback_upstreams() -> None:
    with pytest.raises(ValueError, match="probability"):
        FaultRates(reset=1.5)
    with pytest.raises(ValueError, match="add up to"):
        FaultRates(reset=0.6, http_5xx=0.6)
    with pytest.raises(ValueError, match="hang_seconds"):
        FaultRates(hang_seconds=-1)
    assert FaultRates(methods={"eth_call"}).methods == frozenset({"eth_call"})  # type: ignore[arg-type]
    for url in ("http://10.0.0.1:8545", "http://localhost:8545", "http://[::1]:8545"):
        with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
            FaultProxy(url)


def test_command_line_serves_until_interrupted(anvil: AnvilProcess) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    argv = [sys.executable, "-m", "chaos.fault_proxy", "--upstream"]
    argv += [anvil.rpc_url, "--http-5xx", "1", "--methods", "eth_blockNumber"]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert _post(url, _call("eth_chainId")).json()["result"] == CHAIN_ID_HEX
        assert _post(url, _call("eth_blockNumber")).status_code in (502, 503)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    counts = json.loads(out.strip().splitlines()[-1])
    assert (counts["requests"], counts["http_5xx"], counts["forwarded"]) == (2, 1, 1)
