"""A payout transaction's receipt status: 1 (succeeded) or 0 (reverted) once a receipt is seen.

A reverted transaction is MINED like a successful one until the chain's confirmation depth: a
reorganisation may still take its block away and mine the same signed bytes again, this time
perhaps successfully. Only at the depth does it become REVERTED and its withdrawals are
retried; the signer trusts a REVERTED row (receipt status 0) as a nonce consumed by a
transaction that paid nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payout_transactions") as batch:
        batch.add_column(sa.Column("receipt_status", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payout_transactions") as batch:
        batch.drop_column("receipt_status")
