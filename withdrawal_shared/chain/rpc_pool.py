"""A pool of JSON-RPC providers with failover and one circuit breaker per provider.

`RpcPool(urls)` holds one web3 `HTTPProvider` per URL, each behind a `pybreaker.CircuitBreaker`
that opens after `fail_max` consecutive *transport* failures and lets one trial request through
(half-open) after `reset_timeout` seconds.

What counts as what:

- **Transport failure** (fails over, counts against the breaker): connection refused or reset,
  connect/read timeout, any non-2xx HTTP status (5xx, 429 rate limits, 401/403 misconfigured
  keys), and a body that is not a JSON-RPC response.
- **JSON-RPC error answer** (`{"error": ...}`: execution reverted, nonce too low, method not
  found, ...): the provider is healthy and answered. `call` raises it as `RpcErrorResponse`
  without trying another provider and without touching the breaker.

`call(method, params)` asks the providers in the order given (the first is the primary; traffic
returns to it as soon as its breaker closes again), skipping those whose breaker is open; when
none answered it retries the round `retries` times (2) after a jittered exponential backoff,
then raises `RpcUnavailable` naming every provider's last error.

`send_raw_transaction(raw)` sends the same signed bytes to *every* provider whose breaker lets it
through (sending identical bytes twice is harmless: the hash is the same) and classifies the
answers into one `SendOutcome`.

**Timeouts are not "not sent".** A read timeout (or a reset after the request was written, or an
HTTP error from a gateway) may hide a request that reached the node: the provider is reported as
`unavailable` with `maybe_sent=True`. An `unavailable` outcome (and an `RpcUnavailable` raised
for `eth_sendRawTransaction`) therefore never proves that the transaction was not broadcast: the
caller must resolve it by reading the chain (the receipt of `SendOutcome.tx_hash`, the sender's
nonce) and must keep re-sending the *same* stored bytes, never re-sign for a new nonce. Likewise
`nonce_too_low` also results when this very transaction was already mined: check its receipt
before deciding that another transaction took the nonce.

The providers are asked one after another (a send costs at most `len(urls) * request_timeout`).

`PoolProvider(pool)` puts a pool behind web3 (`Web3(PoolProvider(RpcPool(urls)))`): reads fail
over transparently, a JSON-RPC error answer reaches web3 as such (so it raises its usual
exceptions, e.g. `ContractLogicError` for a revert), and "no provider answered" is raised as
`PoolUnavailableError`, a `ConnectionError` (an `OSError`, as a failing `HTTPProvider` raises).

When a breaker opens, the pool logs a WARNING with every provider's health after the request
that opened it; `log_health_if_degraded()` logs the same at most every `interval` seconds while
any provider's breaker is not closed (for a service's main loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import pybreaker
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.metrics import (
    RPC_BREAKER_OPENED,
    RPC_PROVIDER_FAILURES,
    RPC_PROVIDER_UP,
    RPC_REQUEST_SECONDS,
    provider_label,
)
from withdrawal_shared.retry import jittered_backoff

__all__ = [
    "BreakerState",
    "PoolProvider",
    "PoolUnavailableError",
    "ProviderHealth",
    "ProviderSendResult",
    "RpcErrorResponse",
    "RpcPool",
    "RpcUnavailable",
    "SendOutcome",
    "SendStatus",
    "classify_send_error",
]

log = logging.getLogger(__name__)

SendStatus = Literal[
    "accepted",
    "already_known",
    "nonce_too_low",
    "underpriced",
    "insufficient_funds",
    "rejected",
    "unavailable",
]
BreakerState = Literal["closed", "open", "half_open"]

# When providers disagree, the most informative answer wins (earlier = stronger).
_PRECEDENCE: tuple[SendStatus, ...] = (
    "accepted",
    "already_known",
    "nonce_too_low",
    "underpriced",
    "insufficient_funds",
    "rejected",
    "unavailable",
)

# Markers are compared "compacted" (lower case, no spaces/underscores/dashes), so geth's
# "nonce too low", erigon's "NONCE_TOO_LOW" and Nethermind's "OldNonce" style all match.
_SEND_ERROR_MARKERS: tuple[tuple[SendStatus, tuple[str, ...]], ...] = (
    (
        "already_known",
        (
            "already known",  # geth, bor, erigon
            "known transaction",  # older geth / parity
            "already imported",  # anvil, openethereum
            "already exists",  # erigon txpool ALREADY_EXISTS
            "alreadyknown",  # nethermind
        ),
    ),
    (
        "nonce_too_low",
        (
            "nonce too low",  # geth, bor, erigon, anvil
            "nonce is too low",
            "oldnonce",  # nethermind
            "nonce has already been used",
        ),
    ),
    (
        "underpriced",
        (
            "underpriced",  # "replacement transaction underpriced", "transaction underpriced"
            "fee too low",  # "replacement fee too low", nethermind FeeTooLow
            "max fee per gas less than block base fee",  # geth, anvil
            "fee cap less than block base fee",
            "feecap too low",
            "gas price too low",
            "below minimum",  # bor: "gas tip cap ..., minimum needed ..." / "below minimum"
        ),
    ),
    (
        "insufficient_funds",
        (
            "insufficient funds",  # "insufficient funds for gas * price + value"
            "insufficient balance",
        ),
    ),
)


def _compact(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch not in " _-\t\n")


def classify_send_error(message: str) -> SendStatus:
    """Classify an `eth_sendRawTransaction` error message.

    Returns `already_known`, `nonce_too_low`, `underpriced` (including a max fee below the
    block's base fee), `insufficient_funds`, or `rejected` for anything else.
    """
    compact = _compact(message)
    for status, markers in _SEND_ERROR_MARKERS:
        if any(_compact(marker) in compact for marker in markers):
            return status
    return "rejected"


class RpcUnavailable(WithdrawalSystemError):
    """No provider answered; `errors` maps each URL to its last error.

    For `eth_sendRawTransaction` this does NOT mean the transaction was not sent: read the chain.
    """

    def __init__(self, method: str, errors: dict[str, str]) -> None:
        self.method = method
        self.errors = dict(errors)
        listed = "; ".join(f"{provider_label(url)}: {error}" for url, error in self.errors.items())
        super().__init__(
            f"no RPC provider answered {method} ({listed}). Check that the providers are "
            "reachable (URLs, keys, rate limits) and retry later; a request that timed out may "
            "still have reached a node, so resolve sends by reading the chain."
        )


class RpcErrorResponse(WithdrawalSystemError):
    """A provider answered with a JSON-RPC error (an answer, not a provider failure)."""

    def __init__(self, url: str, method: str, code: int | None, message: str, data: Any) -> None:
        self.url = url
        self.method = method
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"{method} answered by {url} with error {code}: {message}")


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One provider's health, for operators and metrics."""

    url: str
    state: BreakerState
    successes: int
    """Requests it answered (a JSON-RPC error answer counts: the provider is healthy)."""
    failures: int
    """Transport failures in total."""
    consecutive_failures: int
    """The breaker's current failure count (reset by a success)."""
    skipped: int
    """Requests not sent to it because its breaker was open."""
    last_error: str | None
    last_error_at: float | None
    """`time.time()` of the last transport failure."""
    last_success_at: float | None


@dataclass(frozen=True, slots=True)
class ProviderSendResult:
    """What one provider said to an `eth_sendRawTransaction`."""

    url: str
    status: SendStatus
    tx_hash: HexStr | None = None
    """The hash the provider returned (only when `accepted`)."""
    error: str | None = None
    """The provider's error message, or the transport failure."""
    maybe_sent: bool = False
    """`unavailable`, but the request may have reached the node (timeout after sending...)."""


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The classified answers of every provider to one raw transaction."""

    status: SendStatus
    tx_hash: HexStr
    """keccak256 of the raw bytes: what to look up on chain, whatever the status."""
    results: tuple[ProviderSendResult, ...]

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def maybe_sent(self) -> bool:
        """True unless every provider provably did not receive the transaction."""
        return any(r.status != "unavailable" or r.maybe_sent for r in self.results)


class _Skipped(Exception):
    """The provider's breaker is open: no request was made."""


class _BadResponse(ValueError):
    """The body was not a JSON-RPC response."""


_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    OSError,
    ValueError,
)


def _is_not_transport(exc: BaseException) -> bool:
    return not isinstance(exc, _TRANSPORT_ERRORS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    return f"{type(exc).__name__}: {exc}"


def _provably_not_sent(exc: BaseException) -> bool:
    """Whether the request cannot have reached the node (no connection was ever made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, NewConnectionError | ConnectionRefusedError)
    return isinstance(exc, ConnectionRefusedError)


class _OpenedListener(pybreaker.CircuitBreakerListener):
    """Notes that a breaker opened (no locks taken: pybreaker holds its own while notifying)."""

    def __init__(self, on_open: Any) -> None:
        self._on_open = on_open

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        label = provider_label(cb.name or "")
        RPC_PROVIDER_UP.set(
            {"provider": label}, 1 if new_state.name == pybreaker.STATE_CLOSED else 0
        )
        if new_state.name == pybreaker.STATE_OPEN:
            RPC_BREAKER_OPENED.add(1, {"provider": label})
            self._on_open(cb.name)


class _Provider:
    def __init__(
        self,
        url: str,
        fail_max: int,
        reset_timeout: float,
        request_timeout: float,
        listener: pybreaker.CircuitBreakerListener | None = None,
    ) -> None:
        self.url = url
        self.label = provider_label(url)  # host:port only: safe to log and to export
        self.reset_timeout = reset_timeout
        # No retries inside web3: failover to the next provider is the retry.
        self.http = HTTPProvider(
            url,
            request_kwargs={"timeout": request_timeout},
            exception_retry_configuration=None,
        )
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            exclude=[_is_not_transport],
            name=url,
            throw_new_error_on_trip=False,
            listeners=[listener] if listener is not None else None,
        )
        self.lock = threading.Lock()
        self.successes = 0
        self.failures = 0
        self.skipped = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        # Every series of this provider exists from the start, before its first failure.
        labels = {"provider": self.label}
        RPC_PROVIDER_FAILURES.add(0, labels)
        RPC_BREAKER_OPENED.add(0, labels)
        RPC_PROVIDER_UP.set(labels, 1)
        self._ok = {"provider": self.label, "outcome": "ok"}
        self._error = {"provider": self.label, "outcome": "error"}

    def _request(self, method: str, params: list[Any]) -> RPCResponse:
        response = self.http.make_request(RPCEndpoint(method), params)
        if not isinstance(response, dict) or ("result" not in response and "error" not in response):
            raise _BadResponse(f"not a JSON-RPC response: {str(response)[:200]}")
        return response

    def request(self, method: str, params: list[Any]) -> RPCResponse:
        """The provider's JSON-RPC response (maybe an error answer).

        Raises `_Skipped` when the breaker is open, a transport exception otherwise.
        """
        started = time.perf_counter()
        try:
            response = self.breaker.call(self._request, method, params)
        except pybreaker.CircuitBreakerError as exc:
            with self.lock:
                self.skipped += 1
            raise _Skipped(f"circuit open (last error: {self.last_error})") from exc
        except _TRANSPORT_ERRORS as exc:
            RPC_REQUEST_SECONDS.record(time.perf_counter() - started, self._error)
            with self.lock:
                self.failures += 1
                self.last_error = _describe(exc)
                self.last_error_at = time.time()
            RPC_PROVIDER_FAILURES.add(1, {"provider": self.label})
            log.warning(
                "RPC provider failed",
                extra={"rpc_provider": self.label, "rpc_method": method, "error": self.last_error},
            )
            raise
        RPC_REQUEST_SECONDS.record(time.perf_counter() - started, self._ok)
        with self.lock:
            self.successes += 1
            self.last_success_at = time.time()
        return response

    def health(self) -> ProviderHealth:
        with self.lock:
            return ProviderHealth(
                url=self.url,
                state=self._state(),
                successes=self.successes,
                failures=self.failures,
                consecutive_failures=self.breaker.fail_counter,
                skipped=self.skipped,
                last_error=self.last_error,
                last_error_at=self.last_error_at,
                last_success_at=self.last_success_at,
            )

    def _state(self) -> BreakerState:
        state = self.breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return "closed"
        if state == pybreaker.STATE_HALF_OPEN:
            return "half_open"
        # pybreaker moves to half-open lazily, on the next call: report what that call would see.
        opened_at = self.breaker._state_storage.opened_at
        if opened_at is not None and datetime.now(UTC) >= opened_at + timedelta(
            seconds=self.reset_timeout
        ):
            return "half_open"
        return "open"


class RpcPool:
    """JSON-RPC providers in order of preference, with failover and circuit breakers."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        fail_max: int = 3,
        reset_timeout: float = 10.0,
        request_timeout: float = 5.0,
        retries: int = 2,
        retry_initial: float = 0.1,
        retry_max: float = 1.0,
    ) -> None:
        if isinstance(urls, str):
            raise TypeError("urls must be a sequence of URLs, not one string")
        if not urls:
            raise ValueError("RpcPool needs at least one provider URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate provider URLs in {list(urls)}")
        if fail_max < 1 or reset_timeout <= 0 or request_timeout <= 0:
            raise ValueError("fail_max must be >= 1, reset_timeout and request_timeout > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._opened: list[str] = []
        self._last_health_log = 0.0
        listener = _OpenedListener(self._opened.append)
        self._providers = tuple(
            _Provider(url, fail_max, reset_timeout, request_timeout, listener) for url in urls
        )

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(p.url for p in self._providers)

    def health(self) -> tuple[ProviderHealth, ...]:
        """A snapshot of every provider's health, in pool order."""
        return tuple(p.health() for p in self._providers)

    def degraded(self) -> bool:
        """Whether any provider's breaker is not closed."""
        return any(h.state != "closed" for h in self.health())

    def log_health_if_degraded(self, interval: float = 30.0) -> bool:
        """Log every provider's health at WARNING when a breaker is not closed, at most once
        every `interval` seconds; True when it logged."""
        now = time.monotonic()
        if now - self._last_health_log < interval:
            return False
        snapshot = self.health()
        if all(h.state == "closed" for h in snapshot):
            return False
        self._last_health_log = now
        self._log_health("RPC providers degraded", snapshot)
        return True

    def _report_opened(self) -> None:
        """After a request: log the pool's health once for the breakers it opened."""
        if not self._opened:
            return
        opened = list(self._opened)
        del self._opened[: len(opened)]
        self._last_health_log = time.monotonic()
        labels = ", ".join(provider_label(url) for url in opened)
        self._log_health(f"RPC provider circuit opened: {labels}", self.health())

    @staticmethod
    def _log_health(message: str, snapshot: tuple[ProviderHealth, ...]) -> None:
        log.warning(
            message,
            extra={
                "rpc_providers": [
                    {
                        "provider": provider_label(h.url),
                        "state": h.state,
                        "successes": h.successes,
                        "failures": h.failures,
                        "consecutive_failures": h.consecutive_failures,
                        "skipped": h.skipped,
                        "last_error": h.last_error,
                    }
                    for h in snapshot
                ]
            },
        )

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one JSON-RPC request to the first provider that answers; return its `result`.

        When no provider answered, the whole round is retried up to `retries` times after a
        jittered exponential backoff (`withdrawal_shared.retry`), so a blip shorter than a
        second does not surface as an error. Raises `RpcErrorResponse` when a provider answers
        with a JSON-RPC error (an answer: no failover, no retry), `RpcUnavailable` when no
        provider answered in any round.
        """
        delays = jittered_backoff(self.retry_initial, self.retry_max)
        attempt = 0
        while True:
            try:
                return self._call(method, params)
            except RpcUnavailable:
                if attempt >= self.retries:
                    raise
                attempt += 1
                time.sleep(next(delays))
            finally:
                self._report_opened()

    def _call(self, method: str, params: Sequence[Any]) -> Any:
        errors: dict[str, str] = {}
        for provider in self._providers:
            try:
                response = provider.request(method, list(params))
            except _Skipped as exc:
                errors[provider.url] = str(exc)
                continue
            except _TRANSPORT_ERRORS as exc:
                errors[provider.url] = _describe(exc)
                continue
            error = response.get("error")
            if error is not None:
                raise _error_response(provider.url, method, error)
            return response.get("result")
        raise RpcUnavailable(method, errors)

    def send_raw_transaction(self, raw: bytes) -> SendOutcome:
        """Send signed bytes to every provider whose breaker is not open; classify the answers.

        Never raises for provider failures: `status == "unavailable"` when no provider answered
        (which does not prove the transaction was not sent: read the chain).
        """
        try:
            return self._send_raw_transaction(raw)
        finally:
            self._report_opened()

    def _send_raw_transaction(self, raw: bytes) -> SendOutcome:
        tx_hash = HexStr(Web3.to_hex(Web3.keccak(raw)))
        payload = [Web3.to_hex(raw)]
        results: list[ProviderSendResult] = []
        for provider in self._providers:
            try:
                response = provider.request("eth_sendRawTransaction", payload)
            except _Skipped as exc:
                results.append(ProviderSendResult(provider.url, "unavailable", error=str(exc)))
                continue
            except _TRANSPORT_ERRORS as exc:
                results.append(
                    ProviderSendResult(
                        provider.url,
                        "unavailable",
                        error=_describe(exc),
                        maybe_sent=not _provably_not_sent(exc),
                    )
                )
                continue
            error = response.get("error")
            if error is not None:
                message = _error_message(error)
                results.append(
                    ProviderSendResult(provider.url, classify_send_error(message), error=message)
                )
            else:
                result = response.get("result")
                results.append(
                    ProviderSendResult(
                        provider.url, "accepted", tx_hash=HexStr(str(result)) if result else None
                    )
                )
        statuses = {r.status for r in results}
        status = next(s for s in _PRECEDENCE if s in statuses)
        return SendOutcome(status=status, tx_hash=tx_hash, results=tuple(results))

    def __repr__(self) -> str:
        return f"RpcPool({list(self.urls)})"


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


def _error_response(url: str, method: str, error: Any) -> RpcErrorResponse:
    code = error.get("code") if isinstance(error, dict) else None
    data = error.get("data") if isinstance(error, dict) else None
    return RpcErrorResponse(
        url, method, code if isinstance(code, int) else None, _error_message(error), data
    )


class PoolUnavailableError(ConnectionError):
    """No provider of the pool answered (a `ConnectionError`, so an `OSError`: callers treat it
    like any transport failure). `unavailable` is the pool's `RpcUnavailable`."""

    def __init__(self, unavailable: RpcUnavailable) -> None:
        super().__init__(str(unavailable))
        self.unavailable = unavailable


class PoolProvider(JSONBaseProvider):
    """A web3 provider asking an `RpcPool`: `Web3(PoolProvider(RpcPool(urls)))`.

    A JSON-RPC error answer is returned as an `{"error": ...}` response (web3 raises its usual
    exceptions from it); no provider answering raises `PoolUnavailableError`.
    """

    def __init__(self, pool: RpcPool) -> None:
        super().__init__()
        self.pool = pool
        self._chain_id: Any = None

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self.request_counter)
        if method == "eth_chainId" and self._chain_id is not None:
            # The chain a node serves does not change: web3's validation middleware asks for
            # it before every eth_call and eth_estimateGas, a whole round trip each time.
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": self._chain_id})
        try:
            result = self.pool.call(method, list(params or []))
        except RpcErrorResponse as exc:
            error: dict[str, Any] = {
                "code": exc.code if exc.code is not None else -32000,
                "message": exc.message,
            }
            if exc.data is not None:
                error["data"] = exc.data
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "error": error})
        except RpcUnavailable as exc:
            raise PoolUnavailableError(exc) from exc
        if method == "eth_chainId" and result is not None:
            self._chain_id = result
        return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def __repr__(self) -> str:
        return f"PoolProvider({self.pool!r})"
