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
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

from opentelemetry import metrics

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

_serving_lock = threading.Lock()
_served_ports: list[int] = []  # the one port this process serves, once it does


def provider_label(url: str) -> str:
    """`host:port` of an RPC URL: enough to tell providers apart, never a key in its path."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "unknown"


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
    "CHAIN_REORGS",
    "EMERGENCY_PAYOUTS_LATE",
    "PAYOUT_REPLACEMENTS",
    "QUEUE_DEAD_LETTERS",
    "QUEUE_REDELIVERIES",
    "RATE_LIMIT_FAIL_OPEN",
    "RATE_LIMIT_REFUSALS",
    "RPC_BREAKER_OPENED",
    "RPC_PROVIDER_FAILURES",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_ATTEMPT_SECONDS",
    "WEBHOOK_BACKLOG",
    "WEBHOOK_ENDPOINTS_DISABLED",
    "WEBHOOK_LAG",
    "WEBHOOK_OUTBOX_GAPS_SKIPPED",
    "WITHDRAWAL_HOLDS",
    "WITHDRAWAL_TRANSITIONS",
    "provider_label",
    "serve_metrics",
]
