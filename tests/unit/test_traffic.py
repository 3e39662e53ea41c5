"""The traffic generator's own logic: tip samplers, pacing, URL guard, and its bookkeeping
(local nonces, error counting and nonce resync, stop reasons) against a fake JSON-RPC node."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from eth_account import Account

from chaos.loopback import require_loopback_url
from chaos.traffic import (
    GWEI,
    Pacer,
    TrafficError,
    TrafficGenerator,
    fixed_tips,
    uniform_tips,
)
from devstack.anvil import DevAccount
from withdrawal_shared.chain.types import PrivateKey

# -- samplers ------------------------------------------------------------------------------------


def test_uniform_tips_stay_in_range_on_the_step_grid_and_cover_it() -> None:
    sample = uniform_tips(30 * GWEI, 300 * GWEI, step_wei=GWEI)
    rng = random.Random(1)
    drawn = [sample(rng) for _ in range(5000)]
    assert all(30 * GWEI <= t <= 300 * GWEI and t % GWEI == 0 for t in drawn)
    assert min(drawn) == 30 * GWEI and max(drawn) == 300 * GWEI  # both ends included
    assert 150 * GWEI < sorted(drawn)[len(drawn) // 2] < 180 * GWEI


def test_samplers_are_reproducible_from_the_seed() -> None:
    sample = uniform_tips(1, 10**12)
    first = [sample(random.Random(7)) for _ in range(3)]
    assert first == [sample(random.Random(7)) for _ in range(3)]
    a, b = random.Random(7), random.Random(8)
    assert [sample(a) for _ in range(5)] != [sample(b) for _ in range(5)]


def test_fixed_tips_draw_only_listed_values() -> None:
    sample = fixed_tips([40 * GWEI, 90 * GWEI, 90 * GWEI])
    rng = random.Random(3)
    drawn = [sample(rng) for _ in range(2000)]
    assert set(drawn) == {40 * GWEI, 90 * GWEI}
    assert drawn.count(90 * GWEI) > drawn.count(40 * GWEI)  # repeating a value weights it


@pytest.mark.parametrize(
    "make",
    [
        lambda: uniform_tips(10, 5),
        lambda: uniform_tips(-1, 5),
        lambda: uniform_tips(1, 5, step_wei=0),
        lambda: fixed_tips([]),
        lambda: fixed_tips([1, -1]),
    ],
)
def test_bad_sampler_configuration(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


# -- pacing --------------------------------------------------------------------------------------


def test_pacer_spaces_sends_by_the_rate_without_drift() -> None:
    pacer = Pacer(20, origin=100.0)
    assert pacer.delay(100.0) == 0.0
    pacer.mark_sent()
    assert pacer.delay(100.01) == pytest.approx(0.04)
    # A slow send does not shift the schedule: send 2 is still due at 100.10.
    pacer.mark_sent()
    assert pacer.delay(100.07) == pytest.approx(0.03)
    assert pacer.sent == 2


def test_pacer_restarts_the_schedule_instead_of_bursting_when_far_behind() -> None:
    pacer = Pacer(10, origin=0.0, max_lag=1.0)
    for _ in range(5):
        pacer.mark_sent()  # send 5 is due at 0.5
    assert pacer.delay(1.2) == 0.0 and pacer.resets == 0  # 0.7 s late: catch up
    assert pacer.delay(3.0) == 0.0 and pacer.resets == 1  # 2.5 s late: start over from now
    pacer.mark_sent()
    assert pacer.delay(3.0) == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "lag"), [(0, 1.0), (-1, 1.0), (1, -0.1)])
def test_bad_pacer(rate: float, lag: float) -> None:
    with pytest.raises(ValueError):
        Pacer(rate, 0.0, max_lag=lag)


# -- URL guard -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8545", "http://127.0.0.2:1/", "https://127.1.2.3"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert require_loopback_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8545", "http://10.0.0.1:8545", "http://[::1]:8545", "ws://127.0.0.1:1", "x"],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        require_loopback_url(url)


# -- the generator against a fake node -----------------------------------------------------------

KEYS = [PrivateKey("0x" + f"{i:064x}") for i in (11, 12, 13)]
ACCOUNTS = [DevAccount(Account.from_key(k).address, k) for k in KEYS]
START_NONCES = {ACCOUNTS[0].address: 5, ACCOUNTS[1].address: 0, ACCOUNTS[2].address: 9}
BASE_FEE = 7 * GWEI


class FakeNode:
    """Enough of eth_* for the generator: it checks each raw transaction's nonce like a node,
    and refuses the sends whose (0-based) index is in `fail_sends`."""

    def __init__(self, fail_sends: set[int] | None = None) -> None:
        self.fail_sends = fail_sends or set()
        self.nonces = dict(START_NONCES)
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def handle(self, method: str, params: list[Any]) -> tuple[Any, Any]:
        if method == "eth_chainId":
            return hex(137), None
        if method == "eth_getTransactionCount":
            address = next(a for a in self.nonces if a.lower() == params[0].lower())
            return hex(self.nonces[address]), None
        if method == "eth_getBlockByNumber":
            return {"number": "0x1", "baseFeePerGas": hex(BASE_FEE)}, None
        if method == "eth_sendRawTransaction":
            return self.send(bytes.fromhex(params[0][2:]))
        return None, {"code": -32601, "message": f"{method} not faked"}

    def send(self, raw: bytes) -> tuple[Any, Any]:
        with self.lock:
            index, self.attempts = self.attempts, self.attempts + 1
            if index in self.fail_sends:
                # Pretend the node lost its pool: the sender's next nonce moved on.
                sender = Account.recover_transaction(raw)
                self.nonces[sender] += 1
                return None, {"code": -32003, "message": "injected failure"}
            assert raw[0] == 2, "an EIP-1559 transaction"
            fields = rlp.decode(raw[1:])
            sender = Account.recover_transaction(raw)
            nonce = int.from_bytes(fields[1], "big")
            if nonce != self.nonces[sender]:
                return None, {"code": -32003, "message": f"nonce {nonce} is not next"}
            self.nonces[sender] += 1
            self.accepted.append(
                {
                    "sender": sender,
                    "nonce": nonce,
                    "tip": int.from_bytes(fields[2], "big"),
                    "max_fee": int.from_bytes(fields[3], "big"),
                    "to": "0x" + fields[5].hex(),
                }
            )
            return "0x" + f"{index:064x}", None


@pytest.fixture
def fake_node(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeNode]]:
    node = FakeNode(getattr(request, "param", set()))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result, error = node.handle(body["method"], body.get("params") or [])
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": body["id"]}
            answer.update({"error": error} if error else {"result": result})
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", node
    finally:
        server.shutdown()
        server.server_close()


def test_sends_round_robin_with_local_nonces_and_the_drawn_tips(
    fake_node: tuple[str, FakeNode],
) -> None:
    url, node = fake_node
    tips = uniform_tips(30 * GWEI, 300 * GWEI, step_wei=GWEI)
    with TrafficGenerator(url, ACCOUNTS, tips, rate=200, max_count=30, seed=9) as traffic:
        assert traffic.wait(10)
    assert traffic.stop_reason == "max_count"
    assert traffic.errors == 0
    sent = traffic.sent
    assert len(sent) == 30 == len(node.accepted)
    # Same seed, same tips, in order.
    rng = random.Random(9)
    assert traffic.tips == [tips(rng) for _ in range(30)]
    assert [a["tip"] for a in node.accepted] == traffic.tips
    assert all(a["max_fee"] == 2 * BASE_FEE + a["tip"] for a in node.accepted)
    for i, account in enumerate(ACCOUNTS):
        mine = [tx for tx in sent if tx.sender == account.address]
        assert len(mine) == 10
        start = START_NONCES[account.address]
        assert [tx.nonce for tx in mine] == list(range(start, start + 10))
        recipient = ACCOUNTS[(i + 1) % 3].address.lower()
        assert {a["to"] for a in node.accepted if a["sender"] == account.address} == {recipient}
    # 30 sends at 200/s: the last is due 29/200 s after the start, never earlier.
    assert 0.145 <= traffic.elapsed < 2.0


@pytest.mark.parametrize("fake_node", [{3, 4, 10}], indirect=True)
def test_failed_sends_are_counted_and_the_nonce_is_resynced(
    fake_node: tuple[str, FakeNode],
) -> None:
    url, node = fake_node
    with TrafficGenerator(
        url, ACCOUNTS, fixed_tips([50 * GWEI]), rate=500, max_count=30, seed=1
    ) as traffic:
        assert traffic.wait(10)
    assert traffic.stop_reason == "max_count"
    assert traffic.errors == 3
    assert all("injected failure" in m for m in traffic.error_messages)
    assert len(traffic.sent) == 27  # a failed attempt uses its slot
    # After each failure the sender continued from the node's pending nonce: no rejections.
    assert len(node.accepted) == 27
    for account in ACCOUNTS:
        nonces = [tx.nonce for tx in traffic.sent if tx.sender == account.address]
        assert nonces == sorted(set(nonces))


def test_stops_after_max_duration_and_on_stop(fake_node: tuple[str, FakeNode]) -> None:
    url, _ = fake_node
    by_time = TrafficGenerator(url, ACCOUNTS, fixed_tips([GWEI]), rate=20, max_duration=0.3)
    with by_time:
        assert by_time.wait(5)
    assert by_time.stop_reason == "max_duration"
    assert 4 <= len(by_time.sent) <= 8  # ~0.3 s at 20/s (the first is sent at once)

    stopped = TrafficGenerator(url, ACCOUNTS, fixed_tips([GWEI]), rate=5, max_duration=60)
    began = time.monotonic()
    with stopped:
        time.sleep(0.1)
        assert not stopped.wait(0)  # still sending
    assert time.monotonic() - began < 2
    assert not stopped.running and stopped.stop_reason == "stopped"
    stopped.stop()  # idempotent


def test_start_fails_when_the_node_is_unreachable() -> None:
    with pytest.raises(TrafficError, match="cannot start"):
        TrafficGenerator("http://127.0.0.1:9", ACCOUNTS, fixed_tips([1])).start()


@pytest.mark.parametrize("fake_node", [set(range(1000))], indirect=True)
def test_a_node_refusing_everything_ends_the_run(fake_node: tuple[str, FakeNode]) -> None:
    url, _ = fake_node
    with TrafficGenerator(
        url, ACCOUNTS, fixed_tips([1]), rate=1000, max_consecutive_errors=5, max_count=100
    ) as traffic:
        assert traffic.wait(5)
    assert traffic.stop_reason == "errors"
    assert traffic.sent == []
    assert traffic.errors == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"senders": []},
        {"senders": [ACCOUNTS[0], ACCOUNTS[0]]},
        {"rate": 0},
        {"max_count": -1},
        {"max_duration": 0},
        {"rpc_url": "http://192.168.1.1:8545"},
    ],
)
def test_bad_generator_configuration(kwargs: dict[str, Any]) -> None:
    url = kwargs.pop("rpc_url", "http://127.0.0.1:1")
    senders = kwargs.pop("senders", ACCOUNTS)
    with pytest.raises(ValueError):
        TrafficGenerator(url, senders, fixed_tips([1]), **kwargs)
