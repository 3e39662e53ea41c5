"""Safe transactions of the treasury: `safe_transactions`, one row per call the treasury Safe
is to make (a treasury operation ordered by an applied four-eyes change, with the change's
kind and payload; later, a large withdrawal's payout), with the Safe nonce it takes (NULL
until it is about to be signed; unique per chain), its EIP-712 hash, its state, the
`execTransaction` calldata a hot wallet sends and the payout transaction that sends it;
`safe_signatures`, the owners' signatures over its hash; and `safe_treasuries.next_nonce`,
the Safe nonce the next one takes.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.add_column(
        "safe_treasuries",
        sa.Column("next_nonce", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "safe_transactions",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("safe_treasuries.chain"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("change_id", sa.String(26), nullable=True, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("safe_nonce", sa.BigInteger(), nullable=True),
        sa.Column("to_address", sa.String(42), nullable=True),
        sa.Column("value_wei", sa.String(80), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("safe_tx_hash", sa.String(66), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exec_calldata", sa.LargeBinary(), nullable=True),
        sa.Column("payout_tx_id", sa.String(26), nullable=True, unique=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("failure_reason", sa.String(512), nullable=False, server_default=""),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        sa.UniqueConstraint("chain", "safe_nonce", name="uq_safe_transactions_nonce"),
        sa.Index("ix_safe_transactions_state", "chain", "state", "id"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "safe_signatures",
        sa.Column(
            "safe_tx_id", sa.String(26), sa.ForeignKey("safe_transactions.id"), primary_key=True
        ),
        sa.Column("owner_address", sa.String(42), primary_key=True),
        sa.Column("safe_tx_hash", sa.String(66), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("safe_signatures")
    op.drop_table("safe_transactions")
    op.drop_column("safe_treasuries", "next_nonce")
