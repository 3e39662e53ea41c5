"""What operators count, as OpenTelemetry instruments exported for Prometheus.

Every service declares its instruments through this module (so the names are in one place and
the same everywhere) and `runtime.run_service` calls `serve_metrics` when
`<SERVICE>_METRICS_PORT` is set (e.g. `PROCESSOR_METRICS_PORT=9102`): a Prometheus text
endpoint at `http://<host>:<port>/metrics` (host `<SERVICE>_METRICS_HOST`, default 127.0.0.1;
in Kubernetes set it to 0.0.0.0 and let the mesh restrict who scrapes).

Instruments created before `serve_metrics` (at import time) are OpenTelemetry's proxies and
start counting once the provider is set, so a process that never serves metrics pays almost
nothing. Counter names get `_total` appended by the exporter.

- `aws_withdrawal_transitions_total{to_state, actor}`: audited state changes.
- `aws_withdrawal_holds_total{reason}`: moves to ON_HOLD, by reason (DEAD_LETTERED, ...).
- `aws_limit_refusals_total{limit}`: creates refused as LIMIT_EXCEEDED, by limit.
- `aws_queue_redeliveries_total`: tasks delivered again after their consumer died.
- `aws_queue_dead_letters_total`: tasks moved to the dead-letter stream.
- `aws_payout_replacements_total`: stuck payouts replaced at the same nonce.
- `aws_chain_reorgs_total`: payouts whose block left the canonical chain.
- `aws_rpc_provider_failures_total{provider}`: transport failures per RPC provider.
- `aws_rpc_breaker_opened_total{provider}`: circuit breakers opened per RPC provider.
- `aws_rate_limit_refusals_total`: gateway requests refused RATE_LIMITED.
- `aws_rate_limit_fail_open_total`: gateway requests admitted unmetered because the rate
  limiter's Redis failed or was slow.
- `aws_webhook_attempts_total{outcome}`: webhook delivery attempts (SUCCEEDED, RETRYING,
  FAILED: no attempt left or the endpoint answered 410).
- `aws_webhook_attempt_seconds`: time from sending an attempt to its answer or failure.
- `aws_webhook_endpoints_disabled_total{reason}`: endpoints the sender disabled
  (ENDPOINT_GONE, FAILING).
- `aws_webhook_backlog`: deliveries not yet finished (PENDING), at the last poll.
- `aws_webhook_lag_seconds`: how long the oldest due delivery has been waiting.
- `aws_webhook_outbox_gaps_skipped_total`: audit ids the outbox cursor took as never
  committed after its grace period.

Provider attributes are the host and port only, never a path or query (where API keys live).

RED metrics of every request (`MeteredRegistrar` in `withdrawal_shared.grpc_metrics` for gRPC,
the REST transcoder for HTTP), RPC latency per provider, gas and fees per token, and the
observable gauges that the service owning each figure refreshes periodically into a
`GaugeValues` (the processor: queue, withdrawals by state, hot wallets and the vault; the
monitor: payouts in flight and the head), so a scrape only reads memory. Histograms are in
seconds, with the `LATENCY_BUCKETS` boundaries.

Every label set known at start-up is created at zero by `initialize(service)` (called by
`runtime.run_service` once metrics are served) and by the code that learns the rest (each RPC
provider when its pool is built, each gRPC method when it is registered, each REST route when
the transcoder is built), so a series exists before its first event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

_meter = metrics.get_meter("assetwithdrawal")

WITHDRAWAL_TRANSITIONS = _meter.create_counter(
    "aws_withdrawal_transitions", description="Audited withdrawal state changes."
)
WITHDRAWAL_HOLDS = _meter.create_counter(
    "aws_withdrawal_holds", description="Withdrawals moved to ON_HOLD, by reason."
)
LIMIT_REFUSALS = _meter.create_counter(
    "aws_limit_refusals", description="Creates refused as LIMIT_EXCEEDED, by limit."
)
QUEUE_REDELIVERIES = _meter.create_counter(
    "aws_queue_redeliveries", description="Queue tasks delivered again after a consumer died."
)
QUEUE_DEAD_LETTERS = _meter.create_counter(
    "aws_queue_dead_letters", description="Queue tasks moved to the dead-letter stream."
)
PAYOUT_REPLACEMENTS = _meter.create_counter(
    "aws_payout_replacements", description="Stuck payouts replaced at the same nonce."
)
CHAIN_REORGS = _meter.create_counter(
    "aws_chain_reorgs", description="Payouts whose block left the canonical chain."
)
MONITOR_LEADER = _meter.create_gauge(
    "aws_monitor_leader",
    description="1 while this monitor replica holds the chain's lease and acts, 0 on standby.",
)
MONITOR_LEASE_LOST = _meter.create_counter(
    "aws_monitor_lease_lost",
    description="Times a monitor replica found its lease taken and rolled back what it did.",
)
EMERGENCY_PAYOUTS_LATE = _meter.create_counter(
    "aws_emergency_payouts_late",
    description="EMERGENCY payouts not mined within MONITOR_EMERGENCY_ALERT_BLOCKS.",
)
RPC_PROVIDER_FAILURES = _meter.create_counter(
    "aws_rpc_provider_failures", description="Transport failures per RPC provider."
)
RPC_BREAKER_OPENED = _meter.create_counter(
    "aws_rpc_breaker_opened", description="Circuit breakers opened per RPC provider."
)
RATE_LIMIT_REFUSALS = _meter.create_counter(
    "aws_rate_limit_refusals", description="Gateway requests refused RATE_LIMITED."
)
RATE_LIMIT_FAIL_OPEN = _meter.create_counter(
    "aws_rate_limit_fail_open",
    description="Gateway requests admitted unmetered: the rate limiter's Redis failed.",
)
WEBHOOK_ATTEMPTS = _meter.create_counter(
    "aws_webhook_attempts", description="Webhook delivery attempts, by outcome."
)
WEBHOOK_ATTEMPT_SECONDS = _meter.create_histogram(
    "aws_webhook_attempt_seconds", unit="s", description="Duration of one webhook attempt."
)
WEBHOOK_ENDPOINTS_DISABLED = _meter.create_counter(
    "aws_webhook_endpoints_disabled", description="Webhook endpoints disabled, by reason."
)
WEBHOOK_BACKLOG = _meter.create_gauge(
    "aws_webhook_backlog", description="Webhook deliveries not yet finished."
)
WEBHOOK_LAG = _meter.create_gauge(
    "aws_webhook_lag_seconds", unit="s", description="Age of the oldest due webhook delivery."
)
WEBHOOK_OUTBOX_GAPS_SKIPPED = _meter.create_counter(
    "aws_webhook_outbox_gaps_skipped",
    description="Audit ids taken as never committed by the webhook outbox cursor.",
)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency histogram boundaries, seconds (the API's p95 target, 200 ms, is one)."""
CONFIRMATION_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Broadcast-to-settled histogram boundaries, seconds."""

GRPC_SERVER_HANDLED = _meter.create_counter(
    "aws_grpc_server_handled", description="gRPC calls served, by service, method and status code."
)
GRPC_SERVER_HANDLING_SECONDS = _meter.create_histogram(
    "aws_grpc_server_handling_seconds",
    description="gRPC call latency in seconds, by service and method (streams: their lifetime).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
HTTP_SERVER_REQUESTS = _meter.create_counter(
    "aws_http_server_requests", description="REST requests served, by route and HTTP status."
)
HTTP_SERVER_REQUEST_SECONDS = _meter.create_histogram(
    "aws_http_server_request_seconds",
    description="REST request latency in seconds, by route (streams: their lifetime).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
RPC_REQUEST_SECONDS = _meter.create_histogram(
    "aws_rpc_request_seconds",
    description="JSON-RPC request latency in seconds, by provider and outcome (ok, error).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
PAYOUT_GAS_USED = _meter.create_counter(
    "aws_payout_gas_used", description="Gas used by settled payout transactions, by token."
)
PAYOUT_FEES_WEI = _meter.create_counter(
    "aws_payout_fees_wei", description="Fees (wei) paid by settled payout transactions, by token."
)
PAYOUTS_SETTLED = _meter.create_counter(
    "aws_payouts_settled",
    description="Payout transactions settled at the depth, by token and outcome.",
)
PAYOUT_CONFIRMATION_SECONDS = _meter.create_histogram(
    "aws_payout_confirmation_seconds",
    description="Seconds from a payout's creation to its settlement at the depth.",
    explicit_bucket_boundaries_advisory=CONFIRMATION_BUCKETS,
)


class GaugeValues:
    """The latest values of one observable gauge, by label set, set by whoever measures them
    (a periodic reader) and read by the exporter at scrape time: a scrape costs no query."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[tuple[str, str], ...], float] = {}

    @staticmethod
    def _key(attributes: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(attributes.items()))

    def set(self, attributes: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._values[self._key(attributes)] = float(value)

    def set_many(self, values: Iterable[tuple[Mapping[str, str], float]]) -> None:
        with self._lock:
            for attributes, value in values:
                self._values[self._key(attributes)] = float(value)

    def zero(self, label_sets: Iterable[Mapping[str, str]]) -> None:
        """Create each label set at 0 unless it already has a value."""
        with self._lock:
            for attributes in label_sets:
                self._values.setdefault(self._key(attributes), 0.0)

    def snapshot(self) -> dict[tuple[tuple[str, str], ...], float]:
        with self._lock:
            return dict(self._values)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(key)) for key, value in self.snapshot().items()]


QUEUE_STREAM_LENGTH = GaugeValues()
_meter.create_observable_gauge(
    "aws_queue_stream_length",
    callbacks=[QUEUE_STREAM_LENGTH.observe],
    description="Entries in a task or dead-letter stream (XLEN), by stream.",
)
QUEUE_LAG = GaugeValues()
_meter.create_observable_gauge(
    "aws_queue_lag",
    callbacks=[QUEUE_LAG.observe],
    description="Task stream entries not yet delivered to the consumer group.",
)
QUEUE_PENDING = GaugeValues()
_meter.create_observable_gauge(
    "aws_queue_pending",
    callbacks=[QUEUE_PENDING.observe],
    description="Task stream entries delivered to the group, not acknowledged.",
)
QUEUE_OLDEST_PENDING_AGE_SECONDS = GaugeValues()
_meter.create_observable_gauge(
    "aws_queue_oldest_pending_age_seconds",
    callbacks=[QUEUE_OLDEST_PENDING_AGE_SECONDS.observe],
    description="Age of the oldest unacknowledged entry, by stream and group (0 when none).",
)
WITHDRAWALS_IN_STATE = GaugeValues()
_meter.create_observable_gauge(
    "aws_withdrawals_in_state",
    callbacks=[WITHDRAWALS_IN_STATE.observe],
    description="Withdrawals in each non-terminal state, by state.",
)
WITHDRAWAL_OLDEST_IN_STATE_SECONDS = GaugeValues()
_meter.create_observable_gauge(
    "aws_withdrawal_oldest_in_state_seconds",
    callbacks=[WITHDRAWAL_OLDEST_IN_STATE_SECONDS.observe],
    description="Seconds the least recently changed withdrawal has been in its state.",
)
PAYOUTS_IN_FLIGHT = GaugeValues()
_meter.create_observable_gauge(
    "aws_payouts_in_flight",
    callbacks=[PAYOUTS_IN_FLIGHT.observe],
    description="Payout transactions not yet settled, by state.",
)
PAYOUT_OLDEST_IN_FLIGHT_SECONDS = GaugeValues()
_meter.create_observable_gauge(
    "aws_payout_oldest_in_flight_seconds",
    callbacks=[PAYOUT_OLDEST_IN_FLIGHT_SECONDS.observe],
    description="Age of the oldest payout transaction in each in-flight state (0 when none).",
)
SAFE_TRANSACTIONS_OPEN = GaugeValues()
_meter.create_observable_gauge(
    "aws_safe_transactions_open",
    callbacks=[SAFE_TRANSACTIONS_OPEN.observe],
    description="Treasury Safe transactions not yet EXECUTED or FAILED, by purpose and state.",
)
SAFE_TRANSACTION_OLDEST_OPEN_SECONDS = GaugeValues()
_meter.create_observable_gauge(
    "aws_safe_transaction_oldest_open_seconds",
    callbacks=[SAFE_TRANSACTION_OLDEST_OPEN_SECONDS.observe],
    description="Age of the oldest open Safe transaction, by purpose and state (0 when none).",
)
SAFE_TRANSACTIONS_RETRYING = GaugeValues()
_meter.create_observable_gauge(
    "aws_safe_transactions_retrying",
    callbacks=[SAFE_TRANSACTIONS_RETRYING.observe],
    description="SIGNED Safe transactions whose last execution attempt did not execute them "
    "(sent again), by purpose.",
)
CHAIN_HEAD_BLOCK = GaugeValues()
_meter.create_observable_gauge(
    "aws_chain_head_block",
    callbacks=[CHAIN_HEAD_BLOCK.observe],
    description="The chain head the monitor last read.",
)
HOT_WALLET_GAS_BALANCE_WEI = GaugeValues()
_meter.create_observable_gauge(
    "aws_hot_wallet_gas_balance_wei",
    callbacks=[HOT_WALLET_GAS_BALANCE_WEI.observe],
    description="Native balance (gas money, wei) of each hot wallet.",
)
HOT_WALLET_TOKEN_BALANCE = GaugeValues()
_meter.create_observable_gauge(
    "aws_hot_wallet_token_balance",
    callbacks=[HOT_WALLET_TOKEN_BALANCE.observe],
    description="Token balance (base units) of each hot wallet, by wallet and token.",
)
VAULT_TOKEN_BALANCE = GaugeValues()
_meter.create_observable_gauge(
    "aws_vault_token_balance",
    callbacks=[VAULT_TOKEN_BALANCE.observe],
    description="Token balance (base units) of the payout vault, by token.",
)
HOT_WALLET_NONCE_GAP = GaugeValues()
_meter.create_observable_gauge(
    "aws_hot_wallet_nonce_gap",
    callbacks=[HOT_WALLET_NONCE_GAP.observe],
    description="Our next nonce minus the chain's latest nonce, per hot wallet.",
)
RPC_PROVIDER_UP = GaugeValues()
_meter.create_observable_gauge(
    "aws_rpc_provider_up",
    callbacks=[RPC_PROVIDER_UP.observe],
    description="1 while an RPC provider's circuit breaker is closed, 0 while open or half-open.",
)


def initialize(service: str) -> None:
    """Create, at zero, every label set this service's instruments know at start-up."""
    from withdrawal_shared.holds import HoldReason
    from withdrawal_shared.states import State

    if service in ("processor", "monitor"):  # the gateway's actors are its partners
        for state in State:
            WITHDRAWAL_TRANSITIONS.add(0, {"to_state": state.value, "actor": service})
        for reason in HoldReason:
            WITHDRAWAL_HOLDS.add(0, {"reason": reason.value})
    if service == "gateway":
        for limit in (
            "PER_WITHDRAWAL",
            "USER_DAILY_AMOUNT",
            "USER_DAILY_COUNT",
            "PARTNER_DAILY_AMOUNT",
        ):
            LIMIT_REFUSALS.add(0, {"limit": limit})
        RATE_LIMIT_REFUSALS.add(0)
        RATE_LIMIT_FAIL_OPEN.add(0)
    if service == "processor":
        QUEUE_REDELIVERIES.add(0)
        QUEUE_DEAD_LETTERS.add(0)
        PAYOUT_REPLACEMENTS.add(0)
    if service == "webhooks":
        for outcome in ("SUCCEEDED", "RETRYING", "FAILED"):
            WEBHOOK_ATTEMPTS.add(0, {"outcome": outcome})
        for disabled in ("ENDPOINT_GONE", "FAILING"):
            WEBHOOK_ENDPOINTS_DISABLED.add(0, {"reason": disabled})
        WEBHOOK_OUTBOX_GAPS_SKIPPED.add(0)
    if service == "monitor":
        CHAIN_REORGS.add(0)
        MONITOR_LEADER.set(0)
        MONITOR_LEASE_LOST.add(0)


_serving_lock = threading.Lock()
_served_ports: list[int] = []  # the one port this process serves, once it does


def provider_label(url: str) -> str:
    """`host:port` of an RPC URL: enough to tell providers apart, never a key in its path."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "unknown"


def metrics_served() -> bool:
    """Whether this process serves metrics (periodic gauge readers run only then)."""
    with _serving_lock:
        return bool(_served_ports)


def serve_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Export every instrument at http://host:port/metrics (0 picks a free port); the port.

    Idempotent per process: a second call returns the port already served.
    """
    with _serving_lock:
        if _served_ports:
            return _served_ports[0]
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server

        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        server, _thread = start_http_server(port, addr=host)
        bound = int(server.server_address[1])
        _served_ports.append(bound)
        log.info("metrics served", extra={"metrics_url": f"http://{host}:{bound}/metrics"})
        return bound


__all__ = [
    "CHAIN_HEAD_BLOCK",
    "CHAIN_REORGS",
    "EMERGENCY_PAYOUTS_LATE",
    "GRPC_SERVER_HANDLED",
    "GRPC_SERVER_HANDLING_SECONDS",
    "HOT_WALLET_GAS_BALANCE_WEI",
    "HOT_WALLET_NONCE_GAP",
    "HOT_WALLET_TOKEN_BALANCE",
    "HTTP_SERVER_REQUESTS",
    "HTTP_SERVER_REQUEST_SECONDS",
    "MONITOR_LEADER",
    "MONITOR_LEASE_LOST",
    "PAYOUTS_IN_FLIGHT",
    "PAYOUTS_SETTLED",
    "PAYOUT_CONFIRMATION_SECONDS",
    "PAYOUT_FEES_WEI",
    "PAYOUT_GAS_USED",
    "PAYOUT_OLDEST_IN_FLIGHT_SECONDS",
    "PAYOUT_REPLACEMENTS",
    "QUEUE_DEAD_LETTERS",
    "QUEUE_LAG",
    "QUEUE_OLDEST_PENDING_AGE_SECONDS",
    "QUEUE_PENDING",
    "QUEUE_REDELIVERIES",
    "QUEUE_STREAM_LENGTH",
    "RATE_LIMIT_FAIL_OPEN",
    "RATE_LIMIT_REFUSALS",
    "RPC_BREAKER_OPENED",
    "RPC_PROVIDER_FAILURES",
    "RPC_PROVIDER_UP",
    "RPC_REQUEST_SECONDS",
    "VAULT_TOKEN_BALANCE",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_ATTEMPT_SECONDS",
    "WEBHOOK_BACKLOG",
    "WEBHOOK_ENDPOINTS_DISABLED",
    "WEBHOOK_LAG",
    "WEBHOOK_OUTBOX_GAPS_SKIPPED",
    "WITHDRAWALS_IN_STATE",
    "WITHDRAWAL_HOLDS",
    "WITHDRAWAL_OLDEST_IN_STATE_SECONDS",
    "WITHDRAWAL_TRANSITIONS",
    "GaugeValues",
    "initialize",
    "metrics_served",
    "provider_label",
    "serve_metrics",
]
