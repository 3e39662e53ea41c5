"""Approvals and screening: ordered approval rules (seeded with the shipped defaults), the
approval requests and operators' decisions of withdrawals held PENDING_APPROVAL, the
blocklist of recipients never to pay, partners' allowlisted destinations, `created_by` on
withdrawals, and an index for the rules' first-payment and velocity conditions.

Shipped rules (USDC has 6 decimals; amounts in base units, compared as integers):
  10  usdc-auto-below-10k       USDC below 10,000         -> AUTO_APPROVE
  20  usdc-one-approver-below-100k  USDC below 100,000    -> REQUIRE_APPROVALS(1)
  1000 default                  anything else             -> REQUIRE_APPROVALS(2)

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount, utc_datetime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

USDC = 10**6


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
    op.create_index(
        "ix_withdrawals_partner_recipient",
        "withdrawals",
        ["partner_id", "recipient", "create_time"],
    )
    rules = op.create_table(
        "approval_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("approvals_required", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("token_symbol", sa.String(16), nullable=True),
        sa.Column("min_amount", IntegerAmount(), nullable=True),
        sa.Column("max_amount", IntegerAmount(), nullable=True),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("tier", sa.String(32), nullable=True),
        sa.Column("first_payment", sa.Boolean, nullable=True),
        sa.Column("allowlisted", sa.Boolean, nullable=True),
        sa.Column("velocity_hours", sa.Integer, nullable=True),
        sa.Column("velocity_min_count", sa.Integer, nullable=True),
        sa.UniqueConstraint("position", name="uq_approval_rules_position"),
        sa.UniqueConstraint("name", name="uq_approval_rules_name"),
    )
    op.create_table(
        "approval_requests",
        sa.Column(
            "withdrawal_id", sa.String(26), sa.ForeignKey("withdrawals.id"), primary_key=True
        ),
        sa.Column("rule_id", sa.Integer, nullable=True),
        sa.Column("rule_name", sa.String(96), nullable=False),
        sa.Column("approvals_required", sa.Integer, nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("decide_time", utc_datetime(), nullable=True),
    )
    op.create_index(
        "ix_approval_requests_outcome_created", "approval_requests", ["outcome", "create_time"]
    )
    op.create_table(
        "approval_decisions",
        sa.Column(
            "withdrawal_id", sa.String(26), sa.ForeignKey("withdrawals.id"), primary_key=True
        ),
        sa.Column("operator_id", sa.String(64), primary_key=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
    )
    op.create_table(
        "blocked_addresses",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
    )
    op.create_table(
        "allowlisted_addresses",
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
    )
    common = {
        "enabled": True,
        "min_amount": None,
        "partner_id": None,
        "tier": None,
        "first_payment": None,
        "allowlisted": None,
        "velocity_hours": None,
        "velocity_min_count": None,
    }
    op.bulk_insert(
        rules,
        [
            {
                **common,
                "position": 10,
                "name": "usdc-auto-below-10k",
                "action": "AUTO_APPROVE",
                "approvals_required": 0,
                "token_symbol": "USDC",
                "max_amount": 10_000 * USDC,
            },
            {
                **common,
                "position": 20,
                "name": "usdc-one-approver-below-100k",
                "action": "REQUIRE_APPROVALS",
                "approvals_required": 1,
                "token_symbol": "USDC",
                "max_amount": 100_000 * USDC,
            },
            {
                **common,
                "position": 1000,
                "name": "default",
                "action": "REQUIRE_APPROVALS",
                "approvals_required": 2,
                "token_symbol": None,
                "max_amount": None,
            },
        ],
    )


def downgrade() -> None:
    op.drop_table("allowlisted_addresses")
    op.drop_table("blocked_addresses")
    op.drop_table("approval_decisions")
    op.drop_index("ix_approval_requests_outcome_created", table_name="approval_requests")
    op.drop_table("approval_requests")
    op.drop_table("approval_rules")
    op.drop_index("ix_withdrawals_partner_recipient", table_name="withdrawals")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("created_by")
