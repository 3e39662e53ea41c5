"""The treasury Safe: `safe_treasuries`, one row per chain with the Safe's address and its
threshold (how many owner signatures a Safe transaction needs), `safe_owners`, its owners, and
`tokens.safe_threshold_base_units`: a withdrawal of more than this amount is paid by a Safe
transaction from the treasury instead of a hot wallet (NULL: never).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "safe_treasuries",
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), primary_key=True),
        sa.Column("address", sa.String(42), nullable=False, unique=True),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "safe_owners",
        sa.Column("chain", sa.String(32), sa.ForeignKey("safe_treasuries.chain"), primary_key=True),
        sa.Column("owner_address", sa.String(42), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
        **TABLE_OPTIONS,
    )
    op.add_column("tokens", sa.Column("safe_threshold_base_units", IntegerAmount(), nullable=True))


def downgrade() -> None:
    op.drop_column("tokens", "safe_threshold_base_units")
    op.drop_table("safe_owners")
    op.drop_table("safe_treasuries")
