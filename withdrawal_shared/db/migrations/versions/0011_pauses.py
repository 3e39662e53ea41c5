"""The payout kill switch: `payout_pauses`, one row per scope ever paused (everything, a
chain, or a chain's token), with whether it is paused now, why, who and when.

The row of the scope `*` (everything) is created here, not paused: it is the lock row that
orders a pause against a reservation (reservations lock it shared, pauses and resumes
exclusively; see `withdrawal_shared.db.pauses`).

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-08
"""

import datetime as dt
from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    pauses = op.create_table(
        "payout_pauses",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("chain", sa.String(32), sa.ForeignKey("chains.name"), nullable=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.bulk_insert(
        pauses,
        [
            {
                "scope": "*",
                "chain": None,
                "token_id": None,
                "paused": False,
                "reason": "",
                "actor": "migration",
                "update_time": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("payout_pauses")
