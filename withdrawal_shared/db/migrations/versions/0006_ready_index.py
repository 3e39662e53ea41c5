"""An index for the batcher's poll: the processor looks for QUEUED withdrawals several times a
second, urgent ones first and then the oldest, and reads only one payout's worth of them.
With (state, priority, update_time) both reads are short index range scans in that order,
whatever the backlog; without it each poll sorted every QUEUED row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_withdrawals_state_priority_updated",
        "withdrawals",
        ["state", "priority", "update_time"],
    )


def downgrade() -> None:
    op.drop_index("ix_withdrawals_state_priority_updated", table_name="withdrawals")
