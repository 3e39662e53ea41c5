"""Initial schema: chains, tokens, system addresses, partners, API keys, withdrawals, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Binary collation on MySQL/MariaDB: ids, request ids and references compare exactly (as on
# SQLite), so "ABC" and "abc" are different idempotency keys everywhere.
TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "chains",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("native_symbol", sa.String(16), nullable=False),
        sa.Column("native_decimals", sa.Integer(), nullable=False),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        sa.Column("min_priority_fee_wei", IntegerAmount(), nullable=False),
        sa.Column("max_fee_cap_wei", IntegerAmount(), nullable=False),
        sa.Column("base_fee_headroom_pct", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("contract_address", sa.String(42), nullable=True),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.Column("max_amount_base_units", IntegerAmount(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("chain", "symbol", name="uq_tokens_chain_symbol"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "system_addresses",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(32), primary_key=True),
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("revoke_time", utc_datetime(), nullable=True),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_api_keys_partner_id", "api_keys", ["partner_id"])
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("client_reference", sa.String(128), nullable=False),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), nullable=False),
        sa.Column("recipient", sa.String(42), nullable=False),
        sa.Column("amount", IntegerAmount(), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("state_reason", sa.String(64), nullable=False),
        sa.Column("state_message", sa.String(512), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("fee_wei", IntegerAmount(), nullable=True),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("audit_head", sa.String(64), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        sa.Column("end_time", utc_datetime(), nullable=True),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_withdrawals_partner_request"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_withdrawals_partner_id", "withdrawals", ["partner_id", "id"])
    op.create_index("ix_withdrawals_partner_state", "withdrawals", ["partner_id", "state", "id"])
    op.create_index("ix_withdrawals_state_updated", "withdrawals", ["state", "update_time"])
    op.create_table(
        "withdrawal_audit",
        sa.Column("id", BIG_PK, primary_key=True, autoincrement=True),
        sa.Column("withdrawal_id", sa.String(26), sa.ForeignKey("withdrawals.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(24), nullable=False),
        sa.Column("to_state", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.String(512), nullable=False),
        sa.Column("reorged", sa.Boolean(), nullable=False),
        sa.Column("occur_time", utc_datetime(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("withdrawal_id", "version", name="uq_withdrawal_audit_version"),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table in (
        "withdrawal_audit",
        "withdrawals",
        "api_keys",
        "partners",
        "system_addresses",
        "tokens",
        "chains",
    ):
        op.drop_table(table)
