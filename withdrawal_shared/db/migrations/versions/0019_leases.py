"""Leases: one row per singleton role (`monitor:<chain>`), naming the replica that holds it,
until when, and its fencing token (raised at every change of holder), so that of several
monitor replicas one acts and a paused former holder cannot (`withdrawal_shared.db.leases`).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expire_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
