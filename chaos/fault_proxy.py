"""A fault-injecting JSON-RPC proxy in front of anvil, for the chaos harness.

`FaultProxy(upstream_url, FaultRates(...))` serves HTTP on 127.0.0.1 from its own thread (its
own asyncio loop) and forwards every request to the upstream node byte for byte: the request
body (a single call, a batch array, or something malformed: it is the node's job to answer
that) and, back, the node's status and body. Each request suffers at most one fault, drawn by
cumulative probability from a seeded `random.Random`; each fault models a failure our services
meet with real RPC providers, and the ones that matter most are those where the request *did*
reach the node although the client cannot tell:

- `delay`: forwarded after a pause drawn uniformly from 0..`delay_max_seconds`. An overloaded
  or distant provider; it exercises client timeouts, slow failover and "the head moved while
  I was waiting".
- `timeout_after_forward`: forwarded, the node's answer discarded, the connection held for
  `hang_seconds` and then closed without a response. A provider (or a load balancer in front
  of it) that accepted the request and then stalled: the client's read timeout fires, yet an
  `eth_sendRawTransaction` is in the mempool. This is what forces callers to treat a timeout
  as "maybe sent" and to resolve it by reading the chain, never by re-signing.
- `http_5xx`: 502 or 503 without forwarding. A provider's gateway that is down or shedding
  load; `RpcPool` must count it as a transport failure and fail over.
- `reset`: the connection aborted (an RST: SO_LINGER 0 then abort) without an answer and
  without forwarding. A crashed backend or a proxy recycling connections mid-request.
- `drop_tx` (only for requests carrying `eth_sendRawTransaction`): forwarded; when the node
  accepted the transaction, `anvil_dropTransaction(hash)` removes it from the node's mempool
  *before* the node's answer is passed back. A provider that acknowledged a broadcast and then
  lost it (evicted, never gossiped): the client holds a hash the chain will never mine, and
  only re-sending the same bytes recovers. Dropping before answering leaves the client no
  window in which it could see the transaction. It only bites while the transaction is still
  pending: on an automining anvil it was mined before the drop, and nothing is dropped (nor
  counted).

`FaultRates.methods` restricts the faults to requests calling one of those methods (a batch
counts as one request, and is eligible when any of its calls is). `set_rates` swaps the rates
at runtime from any thread; `counts()` reports what was injected, plus `requests` (received),
`forwarded` (answered by the upstream) and `upstream_errors` (the upstream itself failed: the
proxy then answers 502 like a real gateway, which is not an injected fault).

Both ends are loopback only: the proxy listens on 127.0.0.1 and refuses an upstream outside
127.0.0.0/8. For manual use:

    python -m chaos.fault_proxy --upstream http://127.0.0.1:8545 --reset 0.05

prints the proxy's URL and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import signal
import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeGuard

import aiohttp
from aiohttp import web

from chaos.loopback import require_loopback_url

__all__ = [
    "COUNT_KEYS",
    "FAULT_KINDS",
    "FaultKind",
    "FaultProxy",
    "FaultProxyError",
    "FaultRates",
]

log = logging.getLogger(__name__)

FaultKind = Literal["delay", "timeout_after_forward", "http_5xx", "reset", "drop_tx"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "delay",
    "timeout_after_forward",
    "http_5xx",
    "reset",
    "drop_tx",
)
COUNT_KEYS: tuple[str, ...] = (*FAULT_KINDS, "forwarded", "requests", "upstream_errors")
"""The keys of `FaultProxy.counts()`, always all present."""

_SEND_RAW = "eth_sendRawTransaction"
_MAX_BODY = 64 * 1024 * 1024  # large batches must pass; aiohttp's default is 1 MiB
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class FaultProxyError(RuntimeError):
    """The proxy was misused (started twice, not running) or could not start or stop."""


@dataclass(frozen=True)
class FaultRates:
    """Per-request fault probabilities, each in [0, 1], adding up to at most 1 (one fault per
    request). The default injects nothing: a transparent proxy."""

    delay: float = 0.0
    """Forward after a pause drawn uniformly from 0..`delay_max_seconds`."""
    delay_max_seconds: float = 0.5
    timeout_after_forward: float = 0.0
    """Forward, then hold the connection `hang_seconds` and close it without a response."""
    hang_seconds: float = 5.0
    http_5xx: float = 0.0
    """Answer 502 or 503 without forwarding."""
    reset: float = 0.0
    """Abort the connection without an answer and without forwarding."""
    drop_tx: float = 0.0
    """`eth_sendRawTransaction` only: forward, drop the accepted transaction from the node's
    mempool (`anvil_dropTransaction`), then pass the node's answer back."""
    methods: frozenset[str] | None = None
    """Only requests calling one of these methods suffer faults (None: every request)."""

    def __post_init__(self) -> None:
        probabilities = {
            "delay": self.delay,
            "timeout_after_forward": self.timeout_after_forward,
            "http_5xx": self.http_5xx,
            "reset": self.reset,
            "drop_tx": self.drop_tx,
        }
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"FaultRates.{name} must be a probability in [0, 1], got {value}")
        total = math.fsum(probabilities.values())
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"the fault probabilities add up to {total:g} > 1: each request suffers at most "
                "one fault, so lower some of them"
            )
        for name, seconds in (
            ("delay_max_seconds", self.delay_max_seconds),
            ("hang_seconds", self.hang_seconds),
        ):
            if not 0.0 <= seconds < math.inf:
                raise ValueError(f"FaultRates.{name} must be finite and >= 0, got {seconds}")
        given: Any = self.methods
        if given is not None and not isinstance(given, frozenset):
            # A set or list given by a caller: keep the dataclass hashable and immutable.
            object.__setattr__(self, "methods", frozenset(given))


@dataclass(frozen=True, slots=True)
class _Calls:
    """What a request body asks for, as far as it parses (nothing, when it does not)."""

    methods: frozenset[str]
    batch: bool
    send_ids: frozenset[int | str]
    """Ids of the `eth_sendRawTransaction` calls of a batch (to find their answers)."""


_NO_CALLS = _Calls(frozenset(), batch=False, send_ids=frozenset())


def _parse_calls(body: bytes) -> _Calls:
    """Read the JSON-RPC methods of a body; never raises (a malformed body is forwarded)."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        return _NO_CALLS
    if isinstance(parsed, dict):
        method = parsed.get("method")
        methods = frozenset((method,)) if isinstance(method, str) else frozenset()
        return _Calls(methods, batch=False, send_ids=frozenset())
    if isinstance(parsed, list):
        names: set[str] = set()
        send_ids: set[int | str] = set()
        for call in parsed:
            if not isinstance(call, dict) or not isinstance(call.get("method"), str):
                continue
            names.add(call["method"])
            call_id = call.get("id")
            if call["method"] == _SEND_RAW and _usable_id(call_id):
                send_ids.add(call_id)
        return _Calls(frozenset(names), batch=True, send_ids=frozenset(send_ids))
    return _NO_CALLS


def _usable_id(value: Any) -> TypeGuard[int | str]:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_tx_hash(value: Any) -> bool:
    if not (isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X")):
        return False
    try:
        int(value[2:], 16)
    except ValueError:
        return False
    return True


def _accepted_hashes(calls: _Calls, payload: bytes) -> list[str]:
    """The transaction hashes the node accepted, read from its answer's `result`s."""
    try:
        answer: Any = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    if not calls.batch:
        if isinstance(answer, dict) and _is_tx_hash(answer.get("result")):
            return [answer["result"]]
        return []
    if not isinstance(answer, list):
        return []
    return [
        item["result"]
        for item in answer
        if isinstance(item, dict)
        and _usable_id(item.get("id"))
        and item["id"] in calls.send_ids
        and _is_tx_hash(item.get("result"))
    ]


def _reset_connection(request: web.BaseRequest) -> None:
    """Abort the client's connection with an RST (SO_LINGER 0), not an orderly FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close_connection(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def _no_response() -> web.Response:
    """What a handler returns after closing its connection: aiohttp fails to write it, takes
    that as a client disconnection and lets the connection go quietly."""
    return web.Response(status=204)


class FaultProxy:
    """An HTTP JSON-RPC proxy on 127.0.0.1 injecting faults in front of `upstream_url`.

    A context manager (`with FaultProxy(anvil.rpc_url, rates) as proxy: proxy.url`); `port=0`
    picks a free port. `seed` makes the sequence of faults reproducible for a given sequence of
    requests. `upstream_timeout` bounds each request to the upstream (then 502).
    """

    def __init__(
        self,
        upstream_url: str,
        rates: FaultRates = FaultRates(),  # frozen: a shared default is safe
        *,
        port: int = 0,
        seed: int | None = None,
        upstream_timeout: float = 30.0,
    ) -> None:
        self.upstream_url = require_loopback_url(upstream_url)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be > 0")
        self._requested_port = port
        self._upstream_timeout = upstream_timeout
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rates = rates
        self._counts = dict.fromkeys(COUNT_KEYS, 0)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None
        self._rpc_ids = iter(range(1, 2**62))

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start serving; returns once the port is listening (or raises why it is not)."""
        if self._thread is not None:
            raise FaultProxyError("the fault proxy is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._run, args=(ready, failure), name="fault-proxy", daemon=True
        )
        self._thread = thread
        thread.start()
        if not ready.wait(_START_TIMEOUT):
            self.stop()
            raise FaultProxyError(f"the fault proxy did not start within {_START_TIMEOUT:g}s")
        if failure:
            thread.join(_STOP_TIMEOUT)
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: hanging and delayed requests end at once, connections close, the
        port is released and the thread joined. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise FaultProxyError(f"the fault proxy thread did not stop within {_STOP_TIMEOUT:g}s")
        self._thread = None

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start() (or lost if it happens later)
            if not ready.is_set():
                failure.append(exc)
                ready.set()
            else:
                log.exception("the fault proxy stopped on an error")
        finally:
            self._loop = self._stopping = self._session = None
            self._port = None

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        stopping = self._stopping = asyncio.Event()
        session = self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._upstream_timeout),
            connector=aiohttp.TCPConnector(limit=256),
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Hanging and delayed handlers wake on `stopping`, so shutdown rarely needs the cap.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self._requested_port, backlog=1024)
            await site.start()
            self._port = int(runner.addresses[0][1])
            ready.set()
            await stopping.wait()
        finally:
            stopping.set()
            await runner.cleanup()
            await session.close()

    # -- what the harness reads and sets ---------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._port is not None

    @property
    def port(self) -> int:
        if self._thread is None or self._port is None:
            raise FaultProxyError("the fault proxy is not running: use `with FaultProxy(...)`")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`: what to give a client instead of the upstream URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def rates(self) -> FaultRates:
        with self._lock:
            return self._rates

    def set_rates(self, rates: FaultRates) -> None:
        """Use `rates` from the next request on (requests in flight keep theirs)."""
        with self._lock:
            self._rates = rates

    def counts(self) -> dict[str, int]:
        """Injected faults by kind, plus `requests`, `forwarded` and `upstream_errors`."""
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(COUNT_KEYS, 0)

    def _count(self, key: str, by: int = 1) -> None:
        with self._lock:
            self._counts[key] += by

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self._port}" if self.running else "stopped"
        return f"FaultProxy({where} -> {self.upstream_url}, {self.rates})"

    # -- the request path (on the proxy's loop) --------------------------------------------

    def _choose(self, rates: FaultRates, calls: _Calls) -> FaultKind | None:
        draw = self._rng.random()  # one draw per request, whatever the rates: reproducible
        if rates.methods is not None and not calls.methods & rates.methods:
            return None
        drop_allowed = _SEND_RAW in calls.methods and (
            rates.methods is None or _SEND_RAW in rates.methods
        )
        for kind, probability in (
            ("delay", rates.delay),
            ("timeout_after_forward", rates.timeout_after_forward),
            ("http_5xx", rates.http_5xx),
            ("reset", rates.reset),
            ("drop_tx", rates.drop_tx if drop_allowed else 0.0),
        ):
            if draw < probability:
                return kind  # type: ignore[return-value] # the literals above
            draw -= probability
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._count("requests")
        try:
            body = await request.read()
        except ConnectionError:  # the client left while sending
            return _no_response()
        rates = self.rates
        calls = _parse_calls(body)
        fault = self._choose(rates, calls)

        if fault == "reset":
            self._count("reset")
            _reset_connection(request)
            return _no_response()
        if fault == "http_5xx":
            self._count("http_5xx")
            status = self._rng.choice((502, 503))
            return web.Response(status=status, text=f"fault proxy: injected HTTP {status}\n")
        if fault == "delay":
            self._count("delay")
            await self._pause(self._rng.uniform(0.0, rates.delay_max_seconds))

        answer = await self._forward(request, body)
        if answer is None:
            return web.Response(status=502, text="fault proxy: the upstream did not answer\n")
        status, content_type, payload = answer

        if fault == "timeout_after_forward":
            self._count("timeout_after_forward")
            await self._pause(rates.hang_seconds)
            _close_connection(request)
            return _no_response()
        if fault == "drop_tx":
            for tx_hash in _accepted_hashes(calls, payload):
                if await self._drop(tx_hash):
                    self._count("drop_tx")
        headers = {"Content-Type": content_type} if content_type else None
        return web.Response(status=status, body=payload, headers=headers)

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the proxy stops."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, str, bytes] | None:
        """The upstream's status, Content-Type and body; None (logged, counted) if it failed."""
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            async with self._session.request(
                request.method, self.upstream_url, data=body, headers=headers
            ) as response:
                payload = await response.read()
                answer = (response.status, response.headers.get("Content-Type", ""), payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count("upstream_errors")
            log.warning(
                "fault proxy: the upstream failed",
                extra={"upstream": self.upstream_url, "error": f"{type(exc).__name__}: {exc}"},
            )
            return None
        self._count("forwarded")
        return answer

    async def _drop(self, tx_hash: str) -> bool:
        """`anvil_dropTransaction(tx_hash)` upstream; True when the node removed it."""
        assert self._session is not None
        call = {
            "jsonrpc": "2.0",
            "id": next(self._rpc_ids),
            "method": "anvil_dropTransaction",
            "params": [tx_hash],
        }
        try:
            async with self._session.post(self.upstream_url, json=call) as response:
                answer: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning(
                "fault proxy: anvil_dropTransaction failed",
                extra={"tx_hash": tx_hash, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        # anvil answers the dropped transaction's hash, or null when it was not pending.
        return isinstance(answer, dict) and answer.get("result") is not None


# -- python -m chaos.fault_proxy --------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.fault_proxy",
        description="A fault-injecting JSON-RPC proxy on 127.0.0.1 (Ctrl-C stops it).",
    )
    parser.add_argument("--upstream", required=True, help="the node, e.g. http://127.0.0.1:8545")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None)
    for name in ("delay", "timeout-after-forward", "http-5xx", "reset", "drop-tx"):
        parser.add_argument(f"--{name}", type=float, default=0.0, help="probability per request")
    parser.add_argument("--delay-max-seconds", type=float, default=0.5)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--methods", default=None, help="comma-separated; default: every method")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    methods = frozenset(m.strip() for m in (args.methods or "").split(",") if m.strip())
    rates = FaultRates(
        delay=args.delay,
        delay_max_seconds=args.delay_max_seconds,
        timeout_after_forward=args.timeout_after_forward,
        hang_seconds=args.hang_seconds,
        http_5xx=args.http_5xx,
        reset=args.reset,
        drop_tx=args.drop_tx,
        methods=methods or None,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    with FaultProxy(args.upstream, rates, port=args.port, seed=args.seed) as proxy:
        # The URL is printed inside: an interrupt may come as soon as a client has read it,
        # while this thread is still returning from the print.
        with contextlib.suppress(KeyboardInterrupt):
            print(proxy.url, flush=True)
            threading.Event().wait()
        print(json.dumps(proxy.counts()), flush=True)


if __name__ == "__main__":
    main()
