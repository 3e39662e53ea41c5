"""The database schema as SQLAlchemy 2 models. The schema itself is created only by the
Alembic migrations in `migrations/`; a test checks that the two agree."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

BigIntPk = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Chain(Base):
    """A chain we pay out on, with its fee and confirmation settings."""

    __tablename__ = "chains"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # e.g. "polygon"
    chain_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    native_symbol: Mapped[str] = mapped_column(String(16))
    native_decimals: Mapped[int] = mapped_column(Integer)
    confirmations: Mapped[int] = mapped_column(Integer)
    min_priority_fee_wei: Mapped[int] = mapped_column(IntegerAmount)
    max_fee_cap_wei: Mapped[int] = mapped_column(IntegerAmount)
    base_fee_headroom_pct: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)


class Token(Base):
    """A token we pay out, per chain; limits live here, not in code."""

    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("chain", "symbol", name="uq_tokens_chain_symbol"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    symbol: Mapped[str] = mapped_column(String(16))
    contract_address: Mapped[str | None] = mapped_column(String(42))
    decimals: Mapped[int] = mapped_column(Integer)
    max_amount_base_units: Mapped[int] = mapped_column(IntegerAmount)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # A withdrawal of more than this is paid by the treasury Safe, not a hot wallet (None: never).
    safe_threshold_base_units: Mapped[int | None] = mapped_column(IntegerAmount, nullable=True)


class SystemAddress(Base):
    """Our own contracts and wallets, which are never valid recipients."""

    __tablename__ = "system_addresses"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    kind: Mapped[str] = mapped_column(String(32))  # hot_wallet, token, payout_contract, ...
    label: Mapped[str] = mapped_column(String(128))


class Partner(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    """Requests per second shared by the partner's keys that have no limit of their own."""
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer)
    """Requests the partner's keys may send at once (defaults to the gateway's burst)."""


class ApiKey(Base):
    """An API key: the public prefix identifies it, only the SHA-256 of the token is stored.

    `scopes` holds the `withdrawal_shared.scopes.Scope` names it is granted, space-separated;
    `last_use_time` is recorded at most once a minute per gateway process.
    """

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    revoke_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    scopes: Mapped[str] = mapped_column(String(255))
    last_use_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    """Requests per second of this key alone (overrides the partner's limit)."""
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer)


class Withdrawal(Base):
    """One payment to one recipient. State changes only through `transitions.move`."""

    __tablename__ = "withdrawals"
    __table_args__ = (
        UniqueConstraint("partner_id", "request_id", name="uq_withdrawals_partner_request"),
        Index("ix_withdrawals_partner_id", "partner_id", "id"),
        # A partner's withdrawals in a state, by id; also the limits' released withdrawals in
        # the window, bounded by id (migration 0026).
        Index("ix_withdrawals_partner_state", "partner_id", "state", "id"),
        # The batcher's poll: urgent QUEUED rows, then the oldest (migration 0006); every read
        # of a state by update_time names the priorities (migration 0026).
        Index("ix_withdrawals_state_priority_updated", "state", "priority", "update_time"),
        UniqueConstraint("chain", "payout_number", name="uq_withdrawals_payout_number"),
        # Approval rules' first-payment and velocity conditions (migration 0012).
        Index("ix_withdrawals_partner_recipient", "partner_id", "recipient", "create_time"),
        # A batch's rows, by line (migration 0014).
        Index("ix_withdrawals_batch", "batch_id", "batch_line"),
        # A partner's client references are unique; "" (none) is NULL here and never collides.
        Index(
            "uq_withdrawals_partner_client_reference",
            "partner_id",
            "client_reference_key",
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    request_id: Mapped[str | None] = mapped_column(String(128))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    client_reference: Mapped[str] = mapped_column(String(128))
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"))
    recipient: Mapped[str] = mapped_column(String(42))  # lowercase hex
    amount: Mapped[int] = mapped_column(IntegerAmount)  # token base units
    priority: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))
    state_reason: Mapped[str] = mapped_column(String(64))
    state_message: Mapped[str] = mapped_column(String(512))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    fee_wei: Mapped[int | None] = mapped_column(IntegerAmount)
    confirmations: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    audit_head: Mapped[str] = mapped_column(String(64))  # hash of the newest audit row
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    end_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    # The payout transaction currently paying it (the newest one at its nonce).
    payout_tx_id: Mapped[str | None] = mapped_column(String(26), index=True)
    # Its number in the payout vault's paid bitmap, given once, when first placed in a payout.
    payout_number: Mapped[int | None] = mapped_column(BigInteger)
    # The partner's own end user ("" when not given); per-user limits apply to it.
    user_ref: Mapped[str] = mapped_column(String(128), server_default="")
    # The minute (since the epoch) whose `limit_usage` rows count it; None when no limit
    # applied to it at creation (it then counts towards none).
    limit_bucket: Mapped[int | None] = mapped_column(BigInteger)

    # The operator whose own action created it (migration 0012); None for partners' API
    # requests. That operator may not approve it (`withdrawal_shared.approvals`).
    created_by: Mapped[str | None] = mapped_column(String(64))

    # The CSV batch and line it was created from (migration 0014); None for a single create.
    batch_id: Mapped[str | None] = mapped_column(String(26))
    batch_line: Mapped[int | None] = mapped_column(Integer)
    # The W3C `traceparent` of the gateway span that created it (migration 0017); None when
    # tracing was off. Every later state change's span is parented to it.
    trace_context: Mapped[str | None] = mapped_column(String(55))
    # `client_reference`, NULL when empty: what the unique index per partner covers.
    client_reference_key: Mapped[str | None] = mapped_column(
        String(128), Computed("NULLIF(client_reference, '')", persisted=False)
    )


class Batch(Base):
    """A partner's CSV upload of many withdrawals (`svc_gateway.batches`).

    `state` is ACCEPTED (its valid rows are withdrawals with `batch_id` set) or REJECTED
    (policy REJECT_ALL found bad rows: no withdrawal was stored, `batch_problems` lists
    them). Idempotent on (partner_id, request_id); `request_fingerprint` covers the content's
    SHA-256 and the policy. `created_by` is the API key's public prefix."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("partner_id", "request_id", name="uq_batches_partner_request"),
        Index("ix_batches_partner_id", "partner_id", "id"),
        Index("ix_batches_partner_content", "partner_id", "content_sha256"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    request_id: Mapped[str] = mapped_column(String(128))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(16))  # REJECT_ALL, ACCEPT_VALID
    state: Mapped[str] = mapped_column(String(16))  # ACCEPTED, REJECTED
    row_count: Mapped[int] = mapped_column(Integer)
    accepted_count: Mapped[int] = mapped_column(Integer)
    problem_row_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class BatchProblem(Base):
    """One problem of one row of a batch's file (a row may have several)."""

    __tablename__ = "batch_problems"
    __table_args__ = (Index("ix_batch_problems_batch_line", "batch_id", "line"),)

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"))
    line: Mapped[int] = mapped_column(Integer)  # the file's line number, the header is 1
    column_name: Mapped[str] = mapped_column(String(32))  # "" for the row as a whole
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(512))
    client_reference: Mapped[str] = mapped_column(String(128))


class WithdrawalAudit(Base):
    """Append-only audit trail: one row per state change, hash-chained per withdrawal.

    `snapshot` holds the withdrawal's transaction hash, fee and confirmations right after the
    change (`audit.Snapshot` as JSON; NULL on rows written before migration 0008)."""

    __tablename__ = "withdrawal_audit"
    __table_args__ = (
        UniqueConstraint("withdrawal_id", "version", name="uq_withdrawal_audit_version"),
    )

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"))
    version: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(512))
    reorged: Mapped[bool] = mapped_column(Boolean)
    occur_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[str | None] = mapped_column(String(255))


class HotWallet(Base):
    """A hot wallet that pays out on a chain; its nonce sequence is allocated here, durably."""

    __tablename__ = "hot_wallets"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # STANDARD, or EMERGENCY: pays only EMERGENCY withdrawals (`WalletRole`)
    role: Mapped[str] = mapped_column(String(16), server_default="STANDARD", default="STANDARD")
    # ACTIVE (reservation picks it), PENDING (a rotation's new wallet, not yet paying),
    # DRAINING (finishes its in-flight payouts only), RETIRED (`WalletState`)
    state: Mapped[str] = mapped_column(String(16), server_default="ACTIVE", default="ACTIVE")


class SignerKey(Base):
    """A hot-wallet key the signer holds (created by CreateWallet, or first seen in its
    configuration) and its state: ACTIVE, or RETIRED (signs no new payout). Only the signer
    reads and writes it."""

    __tablename__ = "signer_keys"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    chain: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(16))  # keystore, pkcs11, aws_kms
    # where the key lives: the keystore file, the PKCS#11 label ("" for a configured key)
    locator: Mapped[str] = mapped_column(String(512), server_default="", default="")
    state: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True)  # CreateWallet's
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class HotWalletRotation(Base):
    """One rotation of a hot wallet's key, ordered by an applied `hot_wallet.rotate` change
    (`svc_processor.rotation`): its current `step`, RUNNING -> DONE (or FAILED), the new
    wallet once the signer created it, and the gas sweep it sent."""

    __tablename__ = "hot_wallet_rotations"
    __table_args__ = (Index("ix_hot_wallet_rotations_state", "chain", "state", "id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    change_id: Mapped[str] = mapped_column(String(26), unique=True)
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    old_wallet: Mapped[str] = mapped_column(String(42))  # lowercase
    new_wallet: Mapped[str | None] = mapped_column(String(42))  # lowercase
    gas_wei: Mapped[str] = mapped_column(String(80))
    step: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    sweep_nonce: Mapped[int | None] = mapped_column(BigInteger)
    sweep_value_wei: Mapped[str | None] = mapped_column(String(80))
    sweep_raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary)
    sweep_tx_hash: Mapped[str | None] = mapped_column(String(66))
    failure_reason: Mapped[str] = mapped_column(String(512), server_default="", default="")
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class PayoutTransaction(Base):
    """One signed on-chain transaction. Stored (with its raw bytes) BEFORE it is broadcast;
    a replacement is another row at the same (wallet, nonce)."""

    __tablename__ = "payout_transactions"
    __table_args__ = (
        Index("ix_payout_transactions_wallet_nonce", "wallet", "nonce"),
        Index("ix_payout_transactions_state", "state", "update_time"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"))
    wallet: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    to_address: Mapped[str] = mapped_column(String(42))
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    gas_limit: Mapped[int] = mapped_column(BigInteger)
    max_fee_per_gas: Mapped[int] = mapped_column(IntegerAmount)
    max_priority_fee_per_gas: Mapped[int] = mapped_column(IntegerAmount)
    # SIGNED -> BROADCAST -> MINED -> CONFIRMED (receipt status 1) or REVERTED (status 0,
    # at the confirmation depth); REPLACED / DROPPED
    state: Mapped[str] = mapped_column(String(16))
    broadcast_count: Mapped[int] = mapped_column(Integer, default=0)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    effective_gas_price: Mapped[int | None] = mapped_column(IntegerAmount)
    fee_wei: Mapped[int | None] = mapped_column(IntegerAmount)
    revert_reason: Mapped[str] = mapped_column(String(256), default="")
    # The receipt's status once mined: 1 succeeded, 0 reverted; None before (and after a
    # reorganisation took its block away).
    receipt_status: Mapped[int | None] = mapped_column(SmallInteger)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    # transfer (one ERC-20 transfer), vault (PayoutVault.payout), nonce_release (a no-op)
    kind: Mapped[str] = mapped_column(String(16), server_default="transfer")
    # The unsigned payload: a replacement re-signs exactly this at the same nonce.
    calldata: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The head block when it was first broadcast (or first refused as underpriced).
    broadcast_block: Mapped[int | None] = mapped_column(BigInteger)
    # The row at the same (wallet, nonce) this one replaced (with higher fees).
    replaces_id: Mapped[str | None] = mapped_column(String(26))
    # The most urgent priority among the withdrawals it pays (EMERGENCY: replaced after one
    # block without a receipt, watched by the monitor every block).
    priority: Mapped[str] = mapped_column(String(16), server_default="STANDARD", default="STANDARD")


class PayoutVault(Base):
    """The payout contract of a chain and the counter of its payout numbers."""

    __tablename__ = "payout_vaults"

    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"), primary_key=True)
    address: Mapped[str] = mapped_column(String(42))  # lowercase
    next_number: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean)


class SafeTreasury(Base):
    """The chain's treasury Safe: it owns the payout vault and pays withdrawals above a token's
    `safe_threshold_base_units` with `threshold` owner signatures."""

    __tablename__ = "safe_treasuries"

    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), unique=True)  # lowercase
    threshold: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    # The Safe nonce the next Safe transaction takes (the processor's counter, checked against
    # the Safe's own `nonce()` before each assignment).
    next_nonce: Mapped[int] = mapped_column(BigInteger, server_default="0", default=0)


class SafeOwner(Base):
    """One owner of a chain's treasury Safe (each owner's key lives in its own signer)."""

    __tablename__ = "safe_owners"

    chain: Mapped[str] = mapped_column(ForeignKey("safe_treasuries.chain"), primary_key=True)
    owner_address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    label: Mapped[str] = mapped_column(String(128))


class SafeTransaction(Base):
    """One call of the chain's treasury Safe (`purpose` TREASURY: the operation of an applied
    four-eyes change; PAYOUT: one withdrawal above its token's Safe threshold, `withdrawal_id`,
    paid through `vault.payout` under its payout number). PENDING (recorded; the
    Safe nonce is assigned when it is about to be signed and kept) -> SIGNED (owners'
    signatures and `exec_calldata` stored) -> EXECUTING (a hot wallet's payout transaction
    `payout_tx_id` sends it) -> EXECUTED, or FAILED with `failure_reason`; back to SIGNED when
    the Safe did not use its nonce (`failure_reason` = `last attempt: ...`)."""

    __tablename__ = "safe_transactions"
    __table_args__ = (
        UniqueConstraint("chain", "safe_nonce", name="uq_safe_transactions_nonce"),
        Index("ix_safe_transactions_state", "chain", "state", "id"),
        # A withdrawal's Safe payouts (migration 0024).
        Index("ix_safe_transactions_withdrawal", "withdrawal_id", "state"),
        UniqueConstraint("rotation_id", "rotation_step", name="uq_safe_transactions_rotation_step"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    chain: Mapped[str] = mapped_column(ForeignKey("safe_treasuries.chain"))
    purpose: Mapped[str] = mapped_column(String(16))  # TREASURY, PAYOUT
    change_id: Mapped[str | None] = mapped_column(String(26), unique=True)
    kind: Mapped[str] = mapped_column(String(64))  # the change's kind
    payload: Mapped[str] = mapped_column(Text)  # the change's payload, canonical JSON
    # NULL until assigned, then kept.
    safe_nonce: Mapped[int | None] = mapped_column(BigInteger)
    to_address: Mapped[str | None] = mapped_column(String(42))  # lowercase
    value_wei: Mapped[str | None] = mapped_column(String(80))  # decimal integer
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    safe_tx_hash: Mapped[str | None] = mapped_column(String(66))  # 0x-prefixed, lowercase
    state: Mapped[str] = mapped_column(String(16))
    exec_calldata: Mapped[bytes | None] = mapped_column(LargeBinary)
    payout_tx_id: Mapped[str | None] = mapped_column(String(26), unique=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66))  # the execution that mined
    failure_reason: Mapped[str] = mapped_column(String(512), server_default="", default="")
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    # PAYOUT: the withdrawal it pays (migration 0024); None for a treasury operation.
    withdrawal_id: Mapped[str | None] = mapped_column(String(26))
    # a treasury operation a hot-wallet rotation runs (change_id NULL): its rotation and step
    rotation_id: Mapped[str | None] = mapped_column(String(26))
    rotation_step: Mapped[str | None] = mapped_column(String(32))


class SafeSignature(Base):
    """An owner's signature (65 bytes, `v` 27 or 28) over a Safe transaction's hash."""

    __tablename__ = "safe_signatures"

    safe_tx_id: Mapped[str] = mapped_column(ForeignKey("safe_transactions.id"), primary_key=True)
    owner_address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    safe_tx_hash: Mapped[str] = mapped_column(String(66))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class VaultFunds(Base):
    """What the payout vault could pay of a token when the processor last read the chain
    (written by the processor as it plans a payout; read by the gateway to tell a batch
    whether the vault covers it, `svc_gateway.batches.funding`)."""

    __tablename__ = "vault_funds"

    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    # The vault's balance minus what payouts not yet settled still take from it.
    available: Mapped[int] = mapped_column(IntegerAmount)
    # What the outflow cap still allows in its window; None when the token is not capped.
    allowance: Mapped[int | None] = mapped_column(IntegerAmount, nullable=True)
    observe_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class PayoutItem(Base):
    """One withdrawal paid by one payout transaction, and what the chain did with it."""

    __tablename__ = "payout_items"

    payout_tx_id: Mapped[str] = mapped_column(
        ForeignKey("payout_transactions.id"), primary_key=True
    )
    withdrawal_id: Mapped[str] = mapped_column(String(26), primary_key=True, index=True)
    payout_number: Mapped[int] = mapped_column(BigInteger, index=True)
    recipient: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(IntegerAmount)
    # "" until mined; then PAID, FAILED (bit left unset) or SKIPPED (already paid)
    outcome: Mapped[str] = mapped_column(String(16), default="")
    outcome_reason: Mapped[str] = mapped_column(String(256), default="")


class SignerLedger(Base):
    """Every transaction the signer signed: written only by svc_signer."""

    __tablename__ = "signer_ledger"
    __table_args__ = (Index("ix_signer_ledger_wallet_nonce", "wallet", "nonce"),)

    tx_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(42))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(24))
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)  # returned again on a repeated request
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class SignerLedgerItem(Base):
    """Which withdrawal each signed transaction pays: the signer's double-payment ledger."""

    __tablename__ = "signer_ledger_items"

    tx_hash: Mapped[str] = mapped_column(ForeignKey("signer_ledger.tx_hash"), primary_key=True)
    withdrawal_id: Mapped[str] = mapped_column(String(26), primary_key=True, index=True)
    wallet: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)


class SafeOwnerSignature(Base):
    """Every signature an owner's signer gave over a treasury Safe transaction: written only
    by svc_signer (role `safe_owner`), one row per (Safe, Safe nonce, owner), so an owner
    never authorises two transactions at one Safe nonce (migration 0022)."""

    __tablename__ = "safe_owner_signatures"

    safe_address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    safe_nonce: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    chain_id: Mapped[int] = mapped_column(BigInteger)
    safe_tx_hash: Mapped[str] = mapped_column(String(66))  # 0x-prefixed EIP-712 hash
    signature: Mapped[bytes] = mapped_column(LargeBinary)  # 65 bytes r || s || v (27 or 28)
    purpose: Mapped[str] = mapped_column(String(24))  # PAYOUT or TREASURY
    to_address: Mapped[str] = mapped_column(String(42))  # lowercase
    change_id: Mapped[str | None] = mapped_column(String(26))  # for TREASURY
    withdrawal_ids: Mapped[str] = mapped_column(Text)  # for PAYOUT: sorted, comma-separated
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class Lease(Base):
    """A singleton role held by one replica at a time (`withdrawal_shared.db.leases`): who
    holds it, until when, and the fencing token that every change of holder raises."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(BigInteger)
    expire_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class PayoutPause(Base):
    """The payout kill switch: one row per scope ever paused, `paused` telling whether it is
    paused now (`withdrawal_shared.db.pauses`).

    `scope` is `*` (everything; `chain` and `token_id` NULL), `<chain>` (`token_id` NULL) or
    `<chain>/<token symbol>`. The `*` row always exists (migration 0011 seeds it): every
    reservation locks it shared and every pause or resume locks it exclusively, so the two
    serialise on MariaDB."""

    __tablename__ = "payout_pauses"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain: Mapped[str | None] = mapped_column(ForeignKey("chains.name"))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    paused: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(256))
    actor: Mapped[str] = mapped_column(String(64))
    # When it was last paused or resumed.
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class Operator(Base):
    """A person (or automation) using the admin API; one identity whatever credentials it holds.

    `roles` is a comma-separated list of `operators.Role` values (sorted); a disabled operator's
    credentials do not authenticate."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128))
    roles: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class OperatorCredential(Base):
    """An operator credential `awo_<8 hex>_<secret>`: found by its prefix, only its SHA-256
    stored (like `ApiKey`). `request_id` is the creating caller's idempotency key."""

    __tablename__ = "operator_credentials"
    __table_args__ = (
        UniqueConstraint("created_by", "request_id", name="uq_operator_credentials_request"),
    )

    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    revoke_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class AdminChange(Base):
    """A proposed configuration change (four eyes): PROPOSED until another admin confirms it
    (APPLIED) or someone rejects it (REJECTED), or its `expire_time` passes (EXPIRED).
    `payload` is the kind's arguments as canonical JSON."""

    __tablename__ = "admin_changes"
    __table_args__ = (
        UniqueConstraint("proposed_by", "request_id", name="uq_admin_changes_request"),
        Index("ix_admin_changes_state", "state", "expire_time"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    proposed_by: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reject_reason: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    expire_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    decide_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class AdminAudit(Base):
    """The admin audit trail: one row per admin action or refusal, hash-chained in `seq`
    order across the whole table (`admin_audit.verify_admin_audit_chain`). `before_value` and
    `after_value` are canonical JSON of the target around the action."""

    __tablename__ = "admin_audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    operator_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before_value: Mapped[str | None] = mapped_column(Text)
    after_value: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    occur_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AdminAuditHead(Base):
    """The one row (id 1) naming the newest admin audit row's `seq` and `hash`. Appending
    updates it first, which serialises appenders (its row lock), and removing the newest
    rows is detectable."""

    __tablename__ = "admin_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class LimitTier(Base):
    """A tier of end users (seeded: `standard`, the default, and `vip`), shared by all
    partners; its limits per token are `TierLimit` rows."""

    __tablename__ = "limit_tiers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(256))
    # The priority a withdrawal of its users gets when the request leaves it unspecified.
    default_priority: Mapped[str] = mapped_column(String(16))


class TierLimit(Base):
    """A tier's limits for one token, in base units; None is no limit."""

    __tablename__ = "tier_limits"

    tier: Mapped[str] = mapped_column(ForeignKey("limit_tiers.name"), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    per_withdrawal_max: Mapped[int | None] = mapped_column(IntegerAmount)
    daily_amount: Mapped[int | None] = mapped_column(IntegerAmount)  # rolling 24 h, per user
    daily_count: Mapped[int | None] = mapped_column(Integer)  # rolling 24 h, per user


class UserTier(Base):
    """Which tier a partner's end user is in; the row with user_ref "" is the partner's
    default tier (else `standard`)."""

    __tablename__ = "user_tiers"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    user_ref: Mapped[str] = mapped_column(String(128), primary_key=True)
    tier: Mapped[str] = mapped_column(ForeignKey("limit_tiers.name"))


class PartnerLimit(Base):
    """A partner-wide limit per token: amount in base units per rolling 24 hours."""

    __tablename__ = "partner_limits"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    daily_amount: Mapped[int] = mapped_column(IntegerAmount)


class LimitUsage(Base):
    """What a limit scope — a partner (user_ref "") or one of its users — withdrew of a token
    per minute (`bucket`, minutes since the epoch) and shard, counted by the gateway in the
    transaction that stores the withdrawals. Bucket 0 holds nothing: its rows are the scope's
    lock rows, one per shard (`svc_gateway.limits`)."""

    __tablename__ = "limit_usage"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_ref: Mapped[str] = mapped_column(String(128), primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shard: Mapped[int] = mapped_column(
        SmallInteger, primary_key=True, autoincrement=False, default=0, server_default="0"
    )
    amount: Mapped[int] = mapped_column(IntegerAmount)
    count: Mapped[int] = mapped_column(Integer)


# --- approvals and screening (migration 0012; see withdrawal_shared/approvals) -------------


class ApprovalRule(Base):
    """One ordered approval rule: the first enabled rule (lowest `position`) whose every
    condition holds decides a withdrawal. A NULL condition holds for every withdrawal.

    `action` is AUTO_APPROVE, REQUIRE_APPROVALS (`approvals_required` >= 1 distinct operators)
    or REJECT. Amounts are base units of the withdrawal's token (compare with `token_symbol`).
    """

    __tablename__ = "approval_rules"
    __table_args__ = (
        UniqueConstraint("position", name="uq_approval_rules_position"),
        UniqueConstraint("name", name="uq_approval_rules_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(24))
    approvals_required: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    token_symbol: Mapped[str | None] = mapped_column(String(16))
    min_amount: Mapped[int | None] = mapped_column(IntegerAmount)  # inclusive
    max_amount: Mapped[int | None] = mapped_column(IntegerAmount)  # exclusive
    partner_id: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(32))
    # True: no COMPLETED withdrawal of the partner to this address yet; False: there is one.
    first_payment: Mapped[bool | None] = mapped_column(Boolean)
    # True: the address is on the partner's allowlist; False: it is not.
    allowlisted: Mapped[bool | None] = mapped_column(Boolean)
    # Holds when the partner's withdrawals to this address created in the last
    # `velocity_hours` hours (this one included) number at least `velocity_min_count`.
    velocity_hours: Mapped[int | None] = mapped_column(Integer)
    velocity_min_count: Mapped[int | None] = mapped_column(Integer)


class ApprovalRequest(Base):
    """A withdrawal held PENDING_APPROVAL: the rule that held it and how many distinct
    operators must approve it. Written in the same transaction as the move."""

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_outcome_created", "outcome", "create_time"),)

    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(Integer)  # None: no rule matched
    rule_name: Mapped[str] = mapped_column(String(96))
    approvals_required: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    # "" while undecided; then APPROVED, REJECTED or EXPIRED.
    outcome: Mapped[str] = mapped_column(String(16))
    decide_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class ApprovalDecision(Base):
    """One operator's decision on one withdrawal (one row per operator: it counts once)."""

    __tablename__ = "approval_decisions"

    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16))  # APPROVE | REJECT
    reason: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class BlockedAddress(Base):
    """A recipient that must never be paid (sanctions screening), on every chain."""

    __tablename__ = "blocked_addresses"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    reason: Mapped[str] = mapped_column(String(256))
    added_by: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class AllowlistedAddress(Base):
    """A destination a partner has vouched for (the rules' `allowlisted` condition)."""

    __tablename__ = "allowlisted_addresses"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase
    label: Mapped[str] = mapped_column(String(128))
    added_by: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())


class WebhookEndpoint(Base):
    """A partner's webhook endpoint. `secret` and `previous_secret` are encrypted
    (`withdrawal_shared.webhooks.secrets`); `event_types` is space-separated, empty for all."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        UniqueConstraint("partner_id", "request_id", name="uq_webhook_endpoints_request"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(256))
    event_types: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))  # ENABLED, DISABLED
    state_reason: Mapped[str] = mapped_column(String(32))
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expire_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    last_success_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    failing_since: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class WebhookDelivery(Base):
    """One event to one endpoint: PENDING until SUCCEEDED or FAILED (no more attempts).
    `sequence` is the withdrawal's version the event records; `lease_until` marks an attempt
    in flight (a crashed sender's lease runs out and the delivery is tried again)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_time"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "withdrawal_id", "sequence"),
    )

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    withdrawal_id: Mapped[str] = mapped_column(String(26))  # "" for endpoint events
    sequence: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    lease_until: Mapped[dt.datetime | None] = mapped_column(utc_datetime())
    occur_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    end_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class WebhookAttempt(Base):
    """The delivery log: one row per attempt."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    endpoint_id: Mapped[str] = mapped_column(String(26))
    attempt: Mapped[int] = mapped_column(Integer)
    attempt_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    status_code: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(String(256))


class WebhookOutboxCursor(Base):
    """How far the outbox (the withdrawal audit trail) was read: every id up to `frontier`
    was handled except those in `gaps` (JSON: id -> when first missed, epoch seconds)."""

    __tablename__ = "webhook_outbox_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    frontier: Mapped[int] = mapped_column(BigInteger)
    gaps: Mapped[str] = mapped_column(Text)
    update_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
