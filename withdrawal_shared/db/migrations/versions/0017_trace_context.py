"""Tracing: `withdrawals.trace_context`, the W3C `traceparent` of the gateway span that
created the withdrawal (NULL when tracing was off), which every later state change's span
is parented to (`withdrawal_shared.tracing`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("trace_context", sa.String(55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("trace_context")
