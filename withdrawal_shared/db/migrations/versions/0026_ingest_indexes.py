"""Two secondary indexes of `withdrawals` fewer, which every inserted row paid for (a CSV
batch's ingest is bound by the database's work per row):

- `ix_withdrawals_state_updated` (state, update_time): `ix_withdrawals_state_priority_updated`
  (state, priority, update_time) serves what it served. The queries that read a state oldest
  first name the priorities (`svc_processor.pipeline`: the ON_HOLD candidates one priority at
  a time, the sweeper with every priority), so they remain index range scans in that order.
- `ix_withdrawals_partner_state_bucket` (partner_id, state, limit_bucket): the limits' read of
  the released withdrawals in the window (`svc_gateway.limits.read_usage`) is bounded by id
  instead (ids sort by their creation time, and a withdrawal's minute is never before its
  id's), through `ix_withdrawals_partner_state` (partner_id, state, id).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_withdrawals_state_updated", table_name="withdrawals")
    op.drop_index("ix_withdrawals_partner_state_bucket", table_name="withdrawals")


def downgrade() -> None:
    op.create_index(
        "ix_withdrawals_partner_state_bucket",
        "withdrawals",
        ["partner_id", "state", "limit_bucket"],
    )
    op.create_index("ix_withdrawals_state_updated", "withdrawals", ["state", "update_time"])
