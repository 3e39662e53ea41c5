"""The pipeline: hot wallets with durable nonces, signed payout transactions, the signer's
ledger, and the link from a withdrawal to the transaction paying it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "hot_wallets",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "payout_transactions",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False, unique=True),
        sa.Column("gas_limit", sa.BigInteger(), nullable=False),
        sa.Column("max_fee_per_gas", IntegerAmount(), nullable=False),
        sa.Column("max_priority_fee_per_gas", IntegerAmount(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("broadcast_count", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("effective_gas_price", IntegerAmount(), nullable=True),
        sa.Column("fee_wei", IntegerAmount(), nullable=True),
        sa.Column("revert_reason", sa.String(256), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index(
        "ix_payout_transactions_wallet_nonce", "payout_transactions", ["wallet", "nonce"]
    )
    op.create_index("ix_payout_transactions_state", "payout_transactions", ["state", "update_time"])
    op.create_table(
        "signer_ledger",
        sa.Column("tx_hash", sa.String(66), primary_key=True),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("purpose", sa.String(24), nullable=False),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_signer_ledger_wallet_nonce", "signer_ledger", ["wallet", "nonce"])
    op.create_table(
        "signer_ledger_items",
        sa.Column(
            "tx_hash",
            sa.String(66),
            sa.ForeignKey("signer_ledger.tx_hash"),
            primary_key=True,
        ),
        sa.Column("withdrawal_id", sa.String(26), primary_key=True),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index(
        "ix_signer_ledger_items_withdrawal_id", "signer_ledger_items", ["withdrawal_id"]
    )
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("payout_tx_id", sa.String(26), nullable=True))
        batch.create_index("ix_withdrawals_payout_tx_id", ["payout_tx_id"])


def downgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_index("ix_withdrawals_payout_tx_id")
        batch.drop_column("payout_tx_id")
    for table in ("signer_ledger_items", "signer_ledger", "payout_transactions", "hot_wallets"):
        op.drop_table(table)
