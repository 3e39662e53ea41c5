"""Payout transactions through the payout vault: the vault and its number counter per chain,
the items of each payout transaction with their on-chain outcome, and each withdrawal's
payout number (unique per chain: the vault's bitmap refuses to pay a number twice).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "payout_vaults",
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), primary_key=True),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("next_number", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "payout_items",
        sa.Column(
            "payout_tx_id",
            sa.String(26),
            sa.ForeignKey("payout_transactions.id"),
            primary_key=True,
        ),
        sa.Column("withdrawal_id", sa.String(26), primary_key=True),
        sa.Column("payout_number", sa.BigInteger(), nullable=False),
        sa.Column("recipient", sa.String(42), nullable=False),
        sa.Column("amount", IntegerAmount(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_reason", sa.String(256), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_payout_items_withdrawal_id", "payout_items", ["withdrawal_id"])
    op.create_index("ix_payout_items_payout_number", "payout_items", ["payout_number"])
    with op.batch_alter_table("payout_transactions") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="transfer")
        )
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("payout_number", sa.BigInteger(), nullable=True))
        batch.create_unique_constraint("uq_withdrawals_payout_number", ["chain", "payout_number"])


def downgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_constraint("uq_withdrawals_payout_number", type_="unique")
        batch.drop_column("payout_number")
    with op.batch_alter_table("payout_transactions") as batch:
        batch.drop_column("kind")
    op.drop_table("payout_items")
    op.drop_table("payout_vaults")
