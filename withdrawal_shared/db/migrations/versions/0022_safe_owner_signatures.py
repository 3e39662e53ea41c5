"""`safe_owner_signatures`: every signature a treasury Safe owner's signer gave, one row per
(Safe, Safe nonce, owner). A repeated request for the same Safe transaction hash returns the
stored signature; another hash at a Safe nonce the owner already signed is refused, so an owner
never authorises two transactions at one Safe nonce. Written only by svc_signer.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "safe_owner_signatures",
        sa.Column("safe_address", sa.String(42), primary_key=True),
        sa.Column("safe_nonce", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("owner_address", sa.String(42), primary_key=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("safe_tx_hash", sa.String(66), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("purpose", sa.String(24), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("change_id", sa.String(26), nullable=True),
        sa.Column("withdrawal_ids", sa.Text(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("safe_owner_signatures")
