"""The emergency lane: a hot wallet's role, and a payout transaction's priority.

`hot_wallets.role` is STANDARD (the default: every existing wallet) or EMERGENCY (pays only
EMERGENCY withdrawals, so they never wait behind the standard wallets' pending nonces).
`payout_transactions.priority` is the most urgent priority among the withdrawals it pays
(STANDARD for every existing row): an EMERGENCY payout is replaced after one block without a
receipt and watched by the monitor every block.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hot_wallets") as batch:
        batch.add_column(
            sa.Column("role", sa.String(16), nullable=False, server_default="STANDARD")
        )
    with op.batch_alter_table("payout_transactions") as batch:
        batch.add_column(
            sa.Column("priority", sa.String(16), nullable=False, server_default="STANDARD")
        )


def downgrade() -> None:
    with op.batch_alter_table("payout_transactions") as batch:
        batch.drop_column("priority")
    with op.batch_alter_table("hot_wallets") as batch:
        batch.drop_column("role")
