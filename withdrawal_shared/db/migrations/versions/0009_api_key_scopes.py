"""API keys hold scopes (space-separated `withdrawal_shared.scopes.Scope` names), the time of
their last use, and an optional rate limit; partners hold an optional rate limit shared by
their keys. Keys made before hold `withdrawals:read withdrawals:create`, what every key could
do until now.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EXISTING_KEY_SCOPES = "withdrawals:create withdrawals:read"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scopes", sa.String(255), nullable=False, server_default=EXISTING_KEY_SCOPES)
        )
        batch.add_column(sa.Column("last_use_time", utc_datetime(), nullable=True))
        batch.add_column(sa.Column("rate_limit_per_second", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        # New keys name their scopes; the default only filled in the existing ones.
        batch.alter_column("scopes", existing_type=sa.String(255), server_default=None)
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("rate_limit_per_second", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("rate_limit_burst")
        batch.drop_column("rate_limit_per_second")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit_burst")
        batch.drop_column("rate_limit_per_second")
        batch.drop_column("last_use_time")
        batch.drop_column("scopes")
