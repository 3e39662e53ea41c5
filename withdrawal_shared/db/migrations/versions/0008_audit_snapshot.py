"""Each audit row keeps a snapshot of the withdrawal's transaction hash, fee and confirmations
as they were right after the change (canonical JSON, covered by the row's hash), so that a
watcher replaying the trail sees every event as the withdrawal was at that version. Rows
written before have none (NULL): their hash stays as it was computed, and a replay shows
those fields empty rather than today's values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawal_audit") as batch:
        batch.add_column(sa.Column("snapshot", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawal_audit") as batch:
        batch.drop_column("snapshot")
