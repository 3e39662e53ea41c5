"""Webhooks: the partners' endpoints (secrets encrypted at rest), one delivery row per
(endpoint, event) with its retry state, the log of every attempt, and the outbox cursor over
the withdrawal audit trail (a frontier plus the ids below it not yet seen).

The cursor starts at the newest audit row: events that occurred before webhooks existed are
never delivered (no endpoint was registered then).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-20
"""

import datetime as dt
from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("event_types", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.String(32), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expire_time", utc_datetime(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        sa.Column("last_success_time", utc_datetime(), nullable=True),
        sa.Column("failing_since", utc_datetime(), nullable=True),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_webhook_endpoints_request"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_webhook_endpoints_partner_id", "webhook_endpoints", ["partner_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIG_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "endpoint_id", sa.String(26), sa.ForeignKey("webhook_endpoints.id"), nullable=False
        ),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("withdrawal_id", sa.String(26), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", utc_datetime(), nullable=False),
        sa.Column("lease_until", utc_datetime(), nullable=True),
        sa.Column("occur_time", utc_datetime(), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("end_time", utc_datetime(), nullable=True),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_event"),
        **TABLE_OPTIONS,
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_time"]
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["endpoint_id", "withdrawal_id", "sequence"],
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIG_PK, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint_id", sa.String(26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempt_time", utc_datetime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.String(256), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])
    op.create_table(
        "webhook_outbox_cursor",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("frontier", sa.BigInteger(), nullable=False),
        sa.Column("gaps", sa.Text(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        **TABLE_OPTIONS,
    )
    bind = op.get_bind()
    newest = bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM withdrawal_audit")).scalar()
    cursor = sa.table(
        "webhook_outbox_cursor",
        sa.column("name", sa.String),
        sa.column("frontier", sa.BigInteger),
        sa.column("gaps", sa.Text),
        sa.column("update_time", utc_datetime()),
    )
    op.bulk_insert(
        cursor,
        [
            {
                "name": "withdrawal_audit",
                "frontier": int(newest or 0),
                "gaps": "{}",
                "update_time": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    for table in (
        "webhook_outbox_cursor",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_endpoints",
    ):
        op.drop_table(table)
