"""Replacing stuck payout transactions: each payout row keeps its unsigned calldata (a
replacement re-signs exactly that payload at the same nonce), the head block when it was
first broadcast (how long it has been waiting), and the row it replaced.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payout_transactions") as batch:
        batch.add_column(sa.Column("calldata", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("broadcast_block", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("replaces_id", sa.String(26), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payout_transactions") as batch:
        batch.drop_column("replaces_id")
        batch.drop_column("broadcast_block")
        batch.drop_column("calldata")
