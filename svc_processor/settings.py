"""The processor's one settings object, read from the environment (defaults documented here)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from withdrawal_shared.settings import (
    ChainSettings,
    env_bool,
    env_float,
    env_int,
    env_str,
)
from withdrawal_shared.tls import TlsFiles


@dataclass(frozen=True)
class ProcessorSettings(ChainSettings):
    signer_target: str = "127.0.0.1:50052"
    """SIGNER_TARGET: host:port of svc_signer."""
    signer_tls: TlsFiles | None = None
    """PROCESSOR_TLS_CA, PROCESSOR_TLS_CERT, PROCESSOR_TLS_KEY: with all three set the
    processor calls the signer over mutual TLS, presenting this certificate (the signer
    answers only the identities it allows); none: plaintext (`withdrawal_shared.tls`)."""
    safe_owner_signers: tuple[str, ...] = ()
    """PROCESSOR_SAFE_OWNER_SIGNERS: comma-separated host:port of the treasury Safe owners'
    signers (one signer process per owner), called with the PROCESSOR_TLS_* settings like
    SIGNER_TARGET; empty: treasury operations are recorded but not executed."""
    treasury_poll_seconds: float = 2.0
    """PROCESSOR_TREASURY_POLL_SECONDS: how often the treasury executor looks at the treasury
    operations (`svc_processor.treasury`)."""
    grpc_host: str = "127.0.0.1"
    """PROCESSOR_GRPC_HOST: where the health endpoint listens."""
    grpc_port: int = 50053
    """PROCESSOR_GRPC_PORT: health and reflection; 0 picks a free port."""
    consumer_group: str = "processor"
    """PROCESSOR_CONSUMER_GROUP: the Redis Streams consumer group."""
    consumer_name: str = ""
    """PROCESSOR_CONSUMER_NAME: this consumer's name in the group, stable across restarts of
    the same replica so that a restarted process resumes the tasks it had read but not
    acknowledged at once (default: `<host>-<PROCESSOR_REPLICA>`, replica 0 unless set). Two
    processes running at the same time need different names (a shared name is safe, as every
    task is idempotent, but they would redeliver each other's tasks at start); set
    PROCESSOR_REPLICA (0, 1, ...) or this for each one on the same host."""
    replica: int = 0
    """PROCESSOR_REPLICA: this processor's index among its replicas (0, 1, ...): its consumer
    name's suffix and its own batching partition (`PROCESSOR_PARTITIONS`)."""
    partitions: int = 1
    """PROCESSOR_PARTITIONS: with several processor replicas, set it to their number: each
    batches the withdrawals of its own partition (and of any whose processor is gone) so they
    never build payouts from the same candidates (`svc_processor.partitions`); 1 = all."""
    partition_lease_seconds: float = 5.0
    """PROCESSOR_PARTITION_LEASE_SECONDS: how long a partition's lease lasts; a stopped
    processor's partition is taken over by another after this long and half as much again."""
    claim_idle_seconds: float = 30.0
    """PROCESSOR_CLAIM_IDLE_SECONDS: a message unacknowledged this long (its consumer died
    or failed transiently) is claimed by another consumer."""
    claim_interval_seconds: float = 5.0
    """PROCESSOR_CLAIM_INTERVAL_SECONDS: how often this consumer looks for idle tasks to claim
    (it also looks once at start, so a restarted processor takes over at once)."""
    read_linger_seconds: float = 0.05
    """PROCESSOR_READ_LINGER_SECONDS: after reading fewer new tasks than a full batch, wait
    this long before the next read, so that tasks arriving one by one are validated several
    per transaction (0: read again at once)."""
    max_deliveries: int = 5
    """PROCESSOR_MAX_DELIVERIES: a task delivered this many times without success (counted by
    Redis, across consumers) goes to the dead-letter stream `<prefix>tasks:dead` and its
    withdrawal, if not yet signed, to ON_HOLD with reason DEAD_LETTERED for an operator.
    Transient failures (chain RPC or signer unavailable) are handed to the sweeper instead."""
    sweep_interval_seconds: float = 5.0
    """PROCESSOR_SWEEP_INTERVAL_SECONDS: how often the sweeper looks for stalled work."""
    sweep_age_seconds: float = 15.0
    """PROCESSOR_SWEEP_AGE_SECONDS: a withdrawal untouched this long in a non-terminal state
    before signing is re-driven by the sweeper (the queue may have lost it)."""
    gas_margin_pct: int = 25
    """PROCESSOR_GAS_MARGIN_PCT: headroom added to eth_estimateGas."""
    signer_timeout_seconds: float = 10.0
    """PROCESSOR_SIGNER_TIMEOUT_SECONDS: deadline of one signing RPC."""
    batch_max_items: int = 300
    """PROCESSOR_BATCH_MAX_ITEMS: withdrawals per payout transaction at most (1 = one
    withdrawal per transaction, the benchmark baseline)."""
    batch_max_wait_seconds: float = 1.0
    """PROCESSOR_BATCH_MAX_WAIT_SECONDS: a batch closes once its oldest withdrawal waited this
    long since it was requested, full or not (PRIORITY and EMERGENCY close it at once)."""
    batch_gas_budget: int = 15_000_000
    """PROCESSOR_BATCH_GAS_BUDGET: gas limit of one payout transaction at most."""
    batch_poll_seconds: float = 0.2
    """PROCESSOR_BATCH_POLL_SECONDS: how often ready batches are looked for (at once again
    after a round that signed a payout)."""
    max_in_flight_per_wallet: int = 16
    """PROCESSOR_MAX_IN_FLIGHT_PER_WALLET: unmined payout transactions per hot wallet at most
    (consecutive nonces)."""
    stuck_after_blocks: int = 5
    """PROCESSOR_STUCK_AFTER_BLOCKS: a broadcast payout without a receipt this many blocks
    after its broadcast is replaced at the same nonce with higher fees."""
    replacement_bump_pct: int = 15
    """PROCESSOR_REPLACEMENT_BUMP_PCT: how much a replacement raises both the tip and the
    max fee (at least 10, what nodes require to accept a replacement); an EMERGENCY payout's
    tip is at least the highest tip among the chain's pending payouts raised by as much."""
    emergency_stuck_after_blocks: int = 1
    """PROCESSOR_EMERGENCY_STUCK_AFTER_BLOCKS: PROCESSOR_STUCK_AFTER_BLOCKS for a payout that
    pays an EMERGENCY withdrawal (checked at every batch poll)."""
    urgent_streak_max: int = 4
    """PROCESSOR_URGENT_STREAK_MAX: at most this many payouts of a token in a row lead with
    PRIORITY or EMERGENCY withdrawals while STANDARD ones are left waiting; the next takes the
    STANDARD ones first."""
    manual_approval: bool = False
    """PROCESSOR_MANUAL_APPROVAL: every withdrawal needs at least one operator's approval
    (an AUTO_APPROVE rule counts as REQUIRE_APPROVALS(1); stricter rules and the blocklist
    still apply). Off by default: the approval rules in the database decide."""
    approval_expiry_seconds: float = 259_200.0
    """PROCESSOR_APPROVAL_EXPIRY_SECONDS: a withdrawal waiting for approval this long (72 h by
    default) is REJECTED with reason APPROVAL_EXPIRED by the sweeper."""

    @classmethod
    def from_env(cls) -> ProcessorSettings:
        d = cls()
        return cls(
            **ChainSettings.chain_env(),
            signer_target=env_str("SIGNER_TARGET", d.signer_target),
            signer_tls=TlsFiles.from_env("PROCESSOR"),
            safe_owner_signers=tuple(
                target.strip()
                for target in env_str("PROCESSOR_SAFE_OWNER_SIGNERS", "").split(",")
                if target.strip()
            ),
            treasury_poll_seconds=env_float(
                "PROCESSOR_TREASURY_POLL_SECONDS", d.treasury_poll_seconds
            ),
            grpc_host=env_str("PROCESSOR_GRPC_HOST", d.grpc_host),
            grpc_port=env_int("PROCESSOR_GRPC_PORT", d.grpc_port, minimum=0),
            consumer_group=env_str("PROCESSOR_CONSUMER_GROUP", d.consumer_group),
            consumer_name=env_str("PROCESSOR_CONSUMER_NAME", "")
            or f"{socket.gethostname()}-{env_int('PROCESSOR_REPLICA', 0, minimum=0)}",
            replica=env_int("PROCESSOR_REPLICA", d.replica, minimum=0),
            partitions=env_int("PROCESSOR_PARTITIONS", d.partitions, minimum=1),
            partition_lease_seconds=env_float(
                "PROCESSOR_PARTITION_LEASE_SECONDS", d.partition_lease_seconds
            ),
            claim_idle_seconds=env_float("PROCESSOR_CLAIM_IDLE_SECONDS", d.claim_idle_seconds),
            claim_interval_seconds=env_float(
                "PROCESSOR_CLAIM_INTERVAL_SECONDS", d.claim_interval_seconds
            ),
            read_linger_seconds=env_float("PROCESSOR_READ_LINGER_SECONDS", d.read_linger_seconds),
            max_deliveries=env_int("PROCESSOR_MAX_DELIVERIES", d.max_deliveries, minimum=1),
            sweep_interval_seconds=env_float(
                "PROCESSOR_SWEEP_INTERVAL_SECONDS", d.sweep_interval_seconds
            ),
            sweep_age_seconds=env_float("PROCESSOR_SWEEP_AGE_SECONDS", d.sweep_age_seconds),
            gas_margin_pct=env_int("PROCESSOR_GAS_MARGIN_PCT", d.gas_margin_pct, minimum=0),
            signer_timeout_seconds=env_float(
                "PROCESSOR_SIGNER_TIMEOUT_SECONDS", d.signer_timeout_seconds
            ),
            batch_max_items=env_int("PROCESSOR_BATCH_MAX_ITEMS", d.batch_max_items, minimum=1),
            batch_max_wait_seconds=env_float(
                "PROCESSOR_BATCH_MAX_WAIT_SECONDS", d.batch_max_wait_seconds
            ),
            batch_gas_budget=env_int(
                "PROCESSOR_BATCH_GAS_BUDGET", d.batch_gas_budget, minimum=100_000
            ),
            batch_poll_seconds=env_float("PROCESSOR_BATCH_POLL_SECONDS", d.batch_poll_seconds),
            max_in_flight_per_wallet=env_int(
                "PROCESSOR_MAX_IN_FLIGHT_PER_WALLET", d.max_in_flight_per_wallet, minimum=1
            ),
            stuck_after_blocks=env_int(
                "PROCESSOR_STUCK_AFTER_BLOCKS", d.stuck_after_blocks, minimum=1
            ),
            replacement_bump_pct=env_int(
                "PROCESSOR_REPLACEMENT_BUMP_PCT", d.replacement_bump_pct, minimum=10
            ),
            emergency_stuck_after_blocks=env_int(
                "PROCESSOR_EMERGENCY_STUCK_AFTER_BLOCKS",
                d.emergency_stuck_after_blocks,
                minimum=1,
            ),
            urgent_streak_max=env_int(
                "PROCESSOR_URGENT_STREAK_MAX", d.urgent_streak_max, minimum=1
            ),
            manual_approval=env_bool("PROCESSOR_MANUAL_APPROVAL", d.manual_approval),
            approval_expiry_seconds=env_float(
                "PROCESSOR_APPROVAL_EXPIRY_SECONDS", d.approval_expiry_seconds
            ),
        )
