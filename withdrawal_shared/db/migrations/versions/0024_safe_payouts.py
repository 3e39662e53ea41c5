"""Safe payouts: `safe_transactions.withdrawal_id`, the withdrawal a Safe transaction of
purpose PAYOUT pays (through `vault.payout` under the withdrawal's payout number); NULL for a
treasury operation. Not unique: a withdrawal the vault did not pay (an item that failed) is
paid by a later one, under the same payout number; the processor gives a withdrawal at most
one Safe transaction that is not settled (PENDING, SIGNED or EXECUTING) at a time.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safe_transactions") as batch:
        batch.add_column(sa.Column("withdrawal_id", sa.String(26), nullable=True))
        batch.create_index("ix_safe_transactions_withdrawal", ["withdrawal_id", "state"])


def downgrade() -> None:
    with op.batch_alter_table("safe_transactions") as batch:
        batch.drop_index("ix_safe_transactions_withdrawal")
        batch.drop_column("withdrawal_id")
