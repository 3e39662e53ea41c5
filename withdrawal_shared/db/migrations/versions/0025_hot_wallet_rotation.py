"""Hot-wallet key rotation: `signer_keys`, the hot signer's own record of the keys it holds
and their state (ACTIVE, RETIRED; only the signer reads or writes it); `hot_wallets.state`
(ACTIVE, PENDING, DRAINING, RETIRED; reservation picks ACTIVE wallets only);
`hot_wallet_rotations`, one row per rotation ordered by an applied `hot_wallet.rotate` change,
with its step and the sweep it sent; and `safe_transactions.rotation_id` / `rotation_step`,
linking the treasury operations a rotation runs to it.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "signer_keys",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("locator", sa.String(512), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True, unique=True),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.add_column(
        "hot_wallets",
        sa.Column("state", sa.String(16), nullable=False, server_default="ACTIVE"),
    )
    op.create_table(
        "hot_wallet_rotations",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("change_id", sa.String(26), nullable=False, unique=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=False),
        sa.Column("old_wallet", sa.String(42), nullable=False),
        sa.Column("new_wallet", sa.String(42), nullable=True),
        sa.Column("gas_wei", sa.String(80), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sweep_nonce", sa.BigInteger(), nullable=True),
        sa.Column("sweep_value_wei", sa.String(80), nullable=True),
        sa.Column("sweep_raw_tx", sa.LargeBinary(), nullable=True),
        sa.Column("sweep_tx_hash", sa.String(66), nullable=True),
        sa.Column("failure_reason", sa.String(512), nullable=False, server_default=""),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        sa.Index("ix_hot_wallet_rotations_state", "chain", "state", "id"),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("safe_transactions") as batch:
        batch.add_column(sa.Column("rotation_id", sa.String(26), nullable=True))
        batch.add_column(sa.Column("rotation_step", sa.String(32), nullable=True))
        batch.create_unique_constraint(
            "uq_safe_transactions_rotation_step", ["rotation_id", "rotation_step"]
        )


def downgrade() -> None:
    with op.batch_alter_table("safe_transactions") as batch:
        batch.drop_constraint("uq_safe_transactions_rotation_step", type_="unique")
        batch.drop_column("rotation_step")
        batch.drop_column("rotation_id")
    op.drop_table("hot_wallet_rotations")
    op.drop_column("hot_wallets", "state")
    op.drop_table("signer_keys")
