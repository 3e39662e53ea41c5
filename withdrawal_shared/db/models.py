"""The database schema as SQLAlchemy 2 models. The schema itself is created only by the
Alembic migrations in `migrations/`; a test checks that the two agree."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
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


class ApiKey(Base):
    """An API key: the public prefix identifies it, only the SHA-256 of the token is stored."""

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(utc_datetime())
    revoke_time: Mapped[dt.datetime | None] = mapped_column(utc_datetime())


class Withdrawal(Base):
    """One payment to one recipient. State changes only through `transitions.move`."""

    __tablename__ = "withdrawals"
    __table_args__ = (
        UniqueConstraint("partner_id", "request_id", name="uq_withdrawals_partner_request"),
        Index("ix_withdrawals_partner_id", "partner_id", "id"),
        Index("ix_withdrawals_partner_state", "partner_id", "state", "id"),
        Index("ix_withdrawals_state_updated", "state", "update_time"),
        # The batcher's poll: urgent QUEUED rows, then the oldest (migration 0006).
        Index("ix_withdrawals_state_priority_updated", "state", "priority", "update_time"),
        UniqueConstraint("chain", "payout_number", name="uq_withdrawals_payout_number"),
        # Approval rules' first-payment and velocity conditions (migration 0012).
        Index("ix_withdrawals_partner_recipient", "partner_id", "recipient", "create_time"),
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
    # The operator whose own action created it (migration 0012); None for partners' API
    # requests. That operator may not approve it (`withdrawal_shared.approvals`).
    created_by: Mapped[str | None] = mapped_column(String(64))


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


class PayoutVault(Base):
    """The payout contract of a chain and the counter of its payout numbers."""

    __tablename__ = "payout_vaults"

    chain: Mapped[str] = mapped_column(ForeignKey("chains.name"), primary_key=True)
    address: Mapped[str] = mapped_column(String(42))  # lowercase
    next_number: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean)


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
