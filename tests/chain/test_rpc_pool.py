"""RpcPool against real anvil processes, dead ports, a silent socket and an HTTP 500 server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_account import Account
from web3 import Web3

from devstack.anvil import AnvilProcess, mine, revert, set_automine, snapshot
from withdrawal_shared.chain.rpc_pool import (
    RpcErrorResponse,
    RpcPool,
    RpcUnavailable,
    classify_send_error,
)
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.metrics import provider_label

pytestmark = pytest.mark.chain

POLYGON_CHAIN_ID_HEX = "0x89"


def _dead_url() -> str:
    """A URL on a 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def anvils() -> Iterator[tuple[AnvilProcess, AnvilProcess]]:
    """Two independent anvils with the same dev accounts: a signed tx is valid on both."""
    with AnvilProcess(quiet=True) as first, AnvilProcess(quiet=True) as second:
        yield first, second


@pytest.fixture
def nodes(
    anvils: tuple[AnvilProcess, AnvilProcess],
) -> Iterator[tuple[AnvilProcess, AnvilProcess]]:
    """Both anvils, reverted (and automining again) after the test."""
    webs = [node.web3() for node in anvils]
    snaps = [snapshot(w3) for w3 in webs]
    yield anvils
    for w3, snap in zip(webs, snaps, strict=True):
        set_automine(w3, True)
        assert revert(w3, snap)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A socket that accepts connections (kernel backlog) but never answers: read timeouts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class _Http500(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"upstream exploded"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http500_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _transfer(node: AnvilProcess, nonce: int, value: int = 1) -> bytes:
    sender, recipient = node.accounts[0], node.accounts[1]
    signed = Account.sign_transaction(
        {
            "type": 2,
            "chainId": 137,
            "nonce": nonce,
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


def _nonce(node: AnvilProcess) -> int:
    return node.web3().eth.get_transaction_count(node.accounts[0].address)


# -- call: failover, breaker, JSON-RPC errors ------------------------------------------------


def test_fails_over_when_the_first_url_is_dead(nodes: tuple[AnvilProcess, AnvilProcess]) -> None:
    dead = _dead_url()
    pool = RpcPool([dead, nodes[0].rpc_url], request_timeout=2)

    assert pool.call("eth_chainId", []) == POLYGON_CHAIN_ID_HEX

    first, second = pool.health()
    assert (first.url, first.failures, first.successes, first.state) == (dead, 1, 0, "closed")
    assert first.last_error is not None and "ConnectionError" in first.last_error
    assert (second.failures, second.successes) == (0, 1)


def test_http_500_fails_over(nodes: tuple[AnvilProcess, AnvilProcess], http500_url: str) -> None:
    pool = RpcPool([http500_url, nodes[0].rpc_url])

    assert pool.call("eth_chainId") == POLYGON_CHAIN_ID_HEX
    assert pool.health()[0].last_error == "HTTP 500 Internal Server Error"


def test_breaker_opens_skips_the_dead_provider_then_half_opens(
    nodes: tuple[AnvilProcess, AnvilProcess],
) -> None:
    dead = _dead_url()
    pool = RpcPool([dead, nodes[0].rpc_url], fail_max=2, reset_timeout=2.0)

    for _ in range(2):
        assert pool.call("eth_chainId") == POLYGON_CHAIN_ID_HEX
    assert pool.health()[0].state == "open"
    assert pool.health()[0].failures == 2

    # Open: no attempt at all (the failure count stays), the next provider answers.
    for _ in range(3):
        assert pool.call("eth_blockNumber") is not None
    dead_health = pool.health()[0]
    assert (dead_health.failures, dead_health.skipped, dead_health.state) == (2, 3, "open")

    time.sleep(2.3)
    assert pool.health()[0].state == "half_open"
    # One trial request goes to the dead provider, fails, and opens the breaker again.
    assert pool.call("eth_chainId") == POLYGON_CHAIN_ID_HEX
    dead_health = pool.health()[0]
    assert (dead_health.failures, dead_health.state) == (3, "open")
    assert pool.health()[1].successes == 6


def test_breaker_closes_again_when_the_provider_recovers(
    nodes: tuple[AnvilProcess, AnvilProcess],
) -> None:
    dead = _dead_url()
    port = int(dead.rsplit(":", 1)[1])
    pool = RpcPool([dead, nodes[0].rpc_url], fail_max=1, reset_timeout=0.3)
    pool.call("eth_chainId")
    assert pool.health()[0].state == "open"

    with AnvilProcess(port=port, quiet=True):
        time.sleep(0.4)
        assert pool.call("eth_chainId") == POLYGON_CHAIN_ID_HEX
        primary = pool.health()[0]
        assert (primary.state, primary.successes) == ("closed", 1)
        assert pool.health()[1].successes == 1  # only the first call needed the fallback


def test_json_rpc_error_is_an_answer_no_failover_no_breaker(
    nodes: tuple[AnvilProcess, AnvilProcess],
) -> None:
    first, second = nodes
    raw = _transfer(first, _nonce(first))
    first.web3().eth.send_raw_transaction(raw)  # mined at once: the nonce is now used
    pool = RpcPool([first.rpc_url, second.rpc_url], fail_max=1)

    for _ in range(3):
        with pytest.raises(RpcErrorResponse) as caught:
            pool.call("eth_sendRawTransaction", [Web3.to_hex(_transfer(first, 0, value=7))])
        assert caught.value.url == first.rpc_url
        assert "nonce too low" in caught.value.message
        assert isinstance(caught.value, WithdrawalSystemError)
    with pytest.raises(RpcErrorResponse) as unknown:
        pool.call("no_suchMethod", [])
    assert unknown.value.code == -32601

    primary, fallback = pool.health()
    assert (primary.state, primary.failures, primary.successes) == ("closed", 0, 4)
    assert primary.consecutive_failures == 0
    assert fallback.successes == 0  # never failed over


def test_all_dead_raises_rpc_unavailable_naming_each_url() -> None:
    dead = [_dead_url(), _dead_url()]
    pool = RpcPool(dead, fail_max=1)

    with pytest.raises(RpcUnavailable) as caught:
        pool.call("eth_chainId")
    assert isinstance(caught.value, WithdrawalSystemError)
    assert set(caught.value.errors) == set(dead)
    for url in dead:
        # Named by host:port only: a provider URL's path or query may hold an API key.
        assert provider_label(url) in str(caught.value)
    secret = RpcUnavailable("eth_chainId", {"https://node.example:8545/v3/KEY123?k=KEY456": "x"})
    assert "KEY123" not in str(secret) and "KEY456" not in str(secret)
    assert "node.example:8545" in str(secret)

    # Both breakers are open now: still a clear RpcUnavailable, naming the open circuits.
    with pytest.raises(RpcUnavailable) as again:
        pool.call("eth_chainId")
    assert all("circuit open" in error for error in again.value.errors.values())


def test_read_timeout_fails_over_and_reports_maybe_sent(
    nodes: tuple[AnvilProcess, AnvilProcess], silent_url: str
) -> None:
    pool = RpcPool([silent_url, nodes[0].rpc_url], request_timeout=0.3)
    assert pool.call("eth_chainId") == POLYGON_CHAIN_ID_HEX
    assert "ReadTimeout" in (pool.health()[0].last_error or "")

    alone = RpcPool([silent_url], request_timeout=0.3)
    outcome = alone.send_raw_transaction(_transfer(nodes[0], _nonce(nodes[0])))
    assert outcome.status == "unavailable"
    assert outcome.results[0].maybe_sent is True
    assert outcome.maybe_sent is True  # the caller must read the chain, not assume "not sent"


# -- send_raw_transaction ---------------------------------------------------------------------


def test_send_to_all_accepted_already_known_nonce_too_low(
    nodes: tuple[AnvilProcess, AnvilProcess],
) -> None:
    first, second = nodes
    webs = [first.web3(), second.web3()]
    for w3 in webs:
        set_automine(w3, False)
    nonce = _nonce(first)
    assert nonce == _nonce(second)
    raw = _transfer(first, nonce)
    pool = RpcPool([first.rpc_url, second.rpc_url])

    outcome = pool.send_raw_transaction(raw)
    assert outcome.status == "accepted" and outcome.accepted
    assert outcome.tx_hash == Web3.to_hex(Web3.keccak(raw))
    assert [r.status for r in outcome.results] == ["accepted", "accepted"]
    assert all(r.tx_hash == outcome.tx_hash for r in outcome.results)
    for w3 in webs:  # really in both mempools
        assert w3.eth.get_transaction(outcome.tx_hash)["nonce"] == nonce

    again = pool.send_raw_transaction(raw)
    assert again.status == "already_known"
    assert [r.status for r in again.results] == ["already_known", "already_known"]

    same_fee_other_tx = pool.send_raw_transaction(_transfer(first, nonce, value=2))
    assert same_fee_other_tx.status == "underpriced"

    for w3 in webs:
        mine(w3)
    used = pool.send_raw_transaction(_transfer(first, nonce, value=3))
    assert used.status == "nonce_too_low"
    assert used.results[0].error is not None and "nonce too low" in used.results[0].error


def test_send_skips_dead_provider_and_all_dead_is_unavailable(
    nodes: tuple[AnvilProcess, AnvilProcess],
) -> None:
    node = nodes[0]
    dead = _dead_url()
    pool = RpcPool([dead, node.rpc_url])

    outcome = pool.send_raw_transaction(_transfer(node, _nonce(node)))
    assert outcome.status == "accepted"
    down, up = outcome.results
    assert (down.url, down.status, down.maybe_sent) == (dead, "unavailable", False)
    assert up.status == "accepted"
    assert node.web3().eth.get_transaction_receipt(outcome.tx_hash)["status"] == 1

    nobody = RpcPool([_dead_url(), _dead_url()]).send_raw_transaction(b"\x01\x02")
    assert nobody.status == "unavailable"
    assert nobody.maybe_sent is False
    assert len(nobody.results) == 2


def test_rejects_invalid_pool_configuration() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RpcPool([])
    with pytest.raises(ValueError, match="duplicate"):
        RpcPool(["http://127.0.0.1:1", "http://127.0.0.1:1"])
    with pytest.raises(TypeError):
        RpcPool("http://127.0.0.1:1")


# -- classify_send_error ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("already known", "already_known"),
        ("known transaction: 0xabc", "already_known"),
        ("transaction already imported", "already_known"),  # anvil
        ("ALREADY_EXISTS: already known", "already_known"),  # erigon
        ("AlreadyKnown", "already_known"),  # nethermind
        ("nonce too low", "nonce_too_low"),
        ("nonce too low: next nonce 5, tx nonce 3", "nonce_too_low"),  # geth / bor
        ("NONCE_TOO_LOW", "nonce_too_low"),
        ("OldNonce", "nonce_too_low"),
        ("replacement transaction underpriced", "underpriced"),
        ("transaction underpriced: tip needed 30000000000, tip permitted 1", "underpriced"),
        ("replacement fee too low", "underpriced"),
        ("max fee per gas less than block base fee", "underpriced"),  # anvil / geth
        (
            "max fee per gas less than block base fee: address 0xab, maxFeePerGas: 1, baseFee: 30",
            "underpriced",
        ),
        ("insufficient funds for gas * price + value", "insufficient_funds"),
        ("Insufficient funds for gas * price + value", "insufficient_funds"),  # anvil
        ("INSUFFICIENT_FUNDS", "insufficient_funds"),
        ("intrinsic gas too low", "rejected"),
        ("invalid sender", "rejected"),
        ("", "rejected"),
    ],
)
def test_classify_send_error(message: str, expected: str) -> None:
    assert classify_send_error(message) == expected
