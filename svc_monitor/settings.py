"""The monitor's one settings object, read from the environment (defaults documented here)."""

from __future__ import annotations

from dataclasses import dataclass

from withdrawal_shared.settings import (
    ChainSettings,
    env_float,
    env_int,
    env_str,
)


@dataclass(frozen=True)
class MonitorSettings(ChainSettings):
    rpc_timeout_seconds: float = 10.0
    """MONITOR_RPC_TIMEOUT_SECONDS: timeout of one JSON-RPC request."""
    poll_seconds: float = 0.5
    """MONITOR_POLL_SECONDS: pause between two polls of the chain head and receipts."""
    batch_size: int = 500
    """MONITOR_BATCH_SIZE: at most this many payout transactions per state are looked at
    per poll (oldest first); the rest wait for the next poll."""
    grpc_host: str = "127.0.0.1"
    """MONITOR_GRPC_HOST."""
    grpc_port: int = 50054
    """MONITOR_GRPC_PORT: gRPC health and reflection only; 0 picks a free port."""
    unhealthy_after_failures: int = 3
    """MONITOR_UNHEALTHY_AFTER_FAILURES: health turns NOT_SERVING after this many polls in a
    row failed (node or database unreachable), and SERVING again after one succeeds."""
    shutdown_grace_seconds: float = 5.0
    """MONITOR_SHUTDOWN_GRACE_SECONDS: in-flight RPCs get this long after SIGTERM."""
    emergency_alert_blocks: int = 3
    """MONITOR_EMERGENCY_ALERT_BLOCKS: an EMERGENCY payout still unmined this many blocks after
    its first broadcast raises `aws_emergency_payouts_late` and logs `emergency payout late`
    (once per payout)."""
    lease_seconds: float = 5.0
    """MONITOR_LEASE_SECONDS: of several monitor replicas of a chain, the one holding the lease
    `monitor:<chain>` acts and the others stand by; a leader that stops renewing it (killed,
    paused, cut off) is replaced after this long plus one poll (`svc_monitor.leadership`)."""

    @classmethod
    def from_env(cls) -> MonitorSettings:
        d = cls()
        return cls(
            **ChainSettings.chain_env(),
            rpc_timeout_seconds=env_float("MONITOR_RPC_TIMEOUT_SECONDS", d.rpc_timeout_seconds),
            poll_seconds=env_float("MONITOR_POLL_SECONDS", d.poll_seconds),
            batch_size=env_int("MONITOR_BATCH_SIZE", d.batch_size, minimum=1),
            grpc_host=env_str("MONITOR_GRPC_HOST", d.grpc_host),
            grpc_port=env_int("MONITOR_GRPC_PORT", d.grpc_port, minimum=0),
            unhealthy_after_failures=env_int(
                "MONITOR_UNHEALTHY_AFTER_FAILURES", d.unhealthy_after_failures, minimum=1
            ),
            shutdown_grace_seconds=env_float(
                "MONITOR_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            emergency_alert_blocks=env_int(
                "MONITOR_EMERGENCY_ALERT_BLOCKS", d.emergency_alert_blocks, minimum=1
            ),
            lease_seconds=env_float("MONITOR_LEASE_SECONDS", d.lease_seconds),
        )
