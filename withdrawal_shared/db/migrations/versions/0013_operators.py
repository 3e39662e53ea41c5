"""The admin API's tables: operators and their credentials, four-eyes configuration changes,
and the hash-chained admin audit trail (with its head row, seq 0 and the genesis hash).

Revision ID: 0013
Revises: 0008
Create Date: 2026-12-08
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("roles", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "operator_credentials",
        sa.Column("prefix", sa.String(32), primary_key=True),
        sa.Column("operator_id", sa.String(64), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("description", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("revoke_time", utc_datetime(), nullable=True),
        sa.UniqueConstraint("created_by", "request_id", name="uq_operator_credentials_request"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_operator_credentials_operator_id", "operator_credentials", ["operator_id"])
    op.create_table(
        "admin_changes",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("reject_reason", sa.String(256), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("expire_time", utc_datetime(), nullable=False),
        sa.Column("decide_time", utc_datetime(), nullable=True),
        sa.UniqueConstraint("proposed_by", "request_id", name="uq_admin_changes_request"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_admin_changes_state", "admin_changes", ["state", "expire_time"])
    op.create_table(
        "admin_audit",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("before_value", sa.Text(), nullable=True),
        sa.Column("after_value", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("occur_time", utc_datetime(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_admin_audit_operator_id", "admin_audit", ["operator_id"])
    head = op.create_table(
        "admin_audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        **TABLE_OPTIONS,
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def downgrade() -> None:
    for table in (
        "admin_audit_head",
        "admin_audit",
        "admin_changes",
        "operator_credentials",
        "operators",
    ):
        op.drop_table(table)
