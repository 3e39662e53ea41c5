"""End users, tiers and limits.

A withdrawal may name the partner's end user (`withdrawals.user_ref`, "" when not given).
Tiers are shared by all partners and seeded here: `standard` (the default tier of every
partner's users, default priority STANDARD) and `vip` (default priority PRIORITY), both
without limits until an operator sets some (`tier_limits`, per token). `user_tiers` assigns a
partner's user to a tier (user_ref "" is the partner's default tier); `partner_limits` holds
a partner-wide amount per token per rolling 24 hours. `limit_usage` counts what each scope
withdrew per minute, and `withdrawals.limit_bucket` names the minute a withdrawal was
counted in (see `svc_gateway.limits`). Withdrawals stored before this revision count towards
no limit.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("user_ref", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("limit_bucket", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_withdrawals_partner_state_bucket",
        "withdrawals",
        ["partner_id", "state", "limit_bucket"],
    )
    tiers = op.create_table(
        "limit_tiers",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("default_priority", sa.String(16), nullable=False),
    )
    op.create_table(
        "tier_limits",
        sa.Column("tier", sa.String(32), sa.ForeignKey("limit_tiers.name"), primary_key=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), primary_key=True),
        sa.Column("per_withdrawal_max", IntegerAmount(), nullable=True),
        sa.Column("daily_amount", IntegerAmount(), nullable=True),
        sa.Column("daily_count", sa.Integer(), nullable=True),
    )
    op.create_table(
        "user_tiers",
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), primary_key=True),
        sa.Column("user_ref", sa.String(128), primary_key=True),
        sa.Column("tier", sa.String(32), sa.ForeignKey("limit_tiers.name"), nullable=False),
    )
    op.create_table(
        "partner_limits",
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), primary_key=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), primary_key=True),
        sa.Column("daily_amount", IntegerAmount(), nullable=False),
    )
    op.create_table(
        "limit_usage",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("user_ref", sa.String(128), primary_key=True),
        sa.Column("token_id", sa.Integer(), primary_key=True),
        sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("amount", IntegerAmount(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.bulk_insert(
        tiers,
        [
            {
                "name": "standard",
                "description": "Every user not assigned to another tier.",
                "default_priority": "STANDARD",
            },
            {
                "name": "vip",
                "description": "Users paid first: PRIORITY unless the request says otherwise.",
                "default_priority": "PRIORITY",
            },
        ],
    )


def downgrade() -> None:
    op.drop_table("limit_usage")
    op.drop_table("partner_limits")
    op.drop_table("user_tiers")
    op.drop_table("tier_limits")
    op.drop_table("limit_tiers")
    op.drop_index("ix_withdrawals_partner_state_bucket", table_name="withdrawals")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("limit_bucket")
        batch.drop_column("user_ref")
