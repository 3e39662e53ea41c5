"""What the payout vault could pay, as the processor last read it: `vault_funds`, one row per
(chain, token) with the vault's balance less what unsettled payouts still take (`available`),
what its outflow cap still allows (`allowance`, NULL when uncapped) and when it was read. The
gateway compares a CSV batch's totals with it when it accepts the batch.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "vault_funds",
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), primary_key=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), primary_key=True),
        sa.Column("available", IntegerAmount(), nullable=False),
        sa.Column("allowance", IntegerAmount(), nullable=True),
        sa.Column("observe_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("vault_funds")
