"""CSV batches: `batches` (one partner upload, idempotent on (partner, request_id), its
content's SHA-256, the policy applied, its counts), `batch_problems` (one row per problem
of a row of the file: line, column, reason code, message), `withdrawals.batch_id` and
`withdrawals.batch_line` (the row of the batch a withdrawal was created from, NULL for a
single create), and `withdrawals.client_reference` unique per partner: a generated column
`client_reference_key` (NULL when the reference is empty, so "no reference" never collides)
under a unique index (partner_id, client_reference_key).

The upgrade refuses, naming them, when stored withdrawals already share a partner and a
non-empty client reference: an operator must settle those before the index can exist.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import utc_datetime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
CLIENT_REFERENCE_KEY = "NULLIF(client_reference, '')"


def _refuse_duplicate_references() -> None:
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT partner_id, client_reference, COUNT(*) FROM withdrawals "
                "WHERE client_reference <> '' GROUP BY partner_id, client_reference "
                "HAVING COUNT(*) > 1 LIMIT 10"
            )
        )
        .all()
    )
    if duplicates:
        listed = ", ".join(f"{p}/{r!r} ({n}x)" for p, r, n in duplicates)
        raise RuntimeError(
            "withdrawals share a partner and a client reference, so the unique index "
            f"cannot be created: {listed}. Give them distinct references, then migrate again."
        )


def upgrade() -> None:
    _refuse_duplicate_references()
    op.create_table(
        "batches",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("accepted_count", sa.Integer(), nullable=False),
        sa.Column("problem_row_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("create_time", utc_datetime(), nullable=False),
        sa.Column("update_time", utc_datetime(), nullable=False),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_batches_partner_request"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_batches_partner_id", "batches", ["partner_id", "id"])
    op.create_index("ix_batches_partner_content", "batches", ["partner_id", "content_sha256"])
    op.create_table(
        "batch_problems",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("batch_id", sa.String(26), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("column_name", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.String(512), nullable=False),
        sa.Column("client_reference", sa.String(128), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_batch_problems_batch_line", "batch_problems", ["batch_id", "line"])
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(26), nullable=True))
        batch.add_column(sa.Column("batch_line", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "client_reference_key",
                sa.String(128),
                sa.Computed(CLIENT_REFERENCE_KEY, persisted=False),
                nullable=True,
            )
        )
    op.create_index("ix_withdrawals_batch", "withdrawals", ["batch_id", "batch_line"])
    op.create_index(
        "uq_withdrawals_partner_client_reference",
        "withdrawals",
        ["partner_id", "client_reference_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_withdrawals_partner_client_reference", table_name="withdrawals")
    op.drop_index("ix_withdrawals_batch", table_name="withdrawals")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("client_reference_key")
        batch.drop_column("batch_line")
        batch.drop_column("batch_id")
    op.drop_table("batch_problems")
    op.drop_table("batches")
