"""Limit shards: `limit_usage` counts per scope, minute and shard (`shard`, in the primary key
after `bucket`), and each scope has a lock row per shard (bucket 0), so that the gateway's
transactions of one scope hold different shards instead of all waiting for one row
(`svc_gateway.limits`). The rows kept are shard 0's; the downgrade adds every shard's counts
of a minute into one row. On SQLite the table is copied into one with the new primary key.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

SCOPE = ["partner_id", "user_ref", "token_id", "bucket"]
COPY = "limit_usage_copy"


def _create(name: str, sharded: bool) -> None:
    shard = [
        sa.Column(
            "shard", sa.SmallInteger(), primary_key=True, autoincrement=False, server_default="0"
        )
    ]
    op.create_table(
        name,
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("user_ref", sa.String(128), primary_key=True),
        sa.Column("token_id", sa.Integer(), primary_key=True),
        sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
        *(shard if sharded else []),
        sa.Column("amount", IntegerAmount(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _create(COPY, sharded=True)
        op.execute(
            "INSERT INTO limit_usage_copy "
            "(partner_id, user_ref, token_id, bucket, shard, amount, count) "
            "SELECT partner_id, user_ref, token_id, bucket, 0, amount, count FROM limit_usage"
        )
        op.drop_table("limit_usage")
        op.rename_table(COPY, "limit_usage")
        return
    op.execute(
        "ALTER TABLE limit_usage ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0 AFTER bucket, "
        "DROP PRIMARY KEY, ADD PRIMARY KEY (partner_id, user_ref, token_id, bucket, shard)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    usage = sa.table(
        "limit_usage",
        sa.column("partner_id", sa.String(64)),
        sa.column("user_ref", sa.String(128)),
        sa.column("token_id", sa.Integer()),
        sa.column("bucket", sa.BigInteger()),
        sa.column("amount", IntegerAmount()),
        sa.column("count", sa.Integer()),
    )
    totals: dict[tuple[str, str, int, int], list[int]] = {}
    for partner_id, user_ref, token_id, bucket, amount, count in bind.execute(sa.select(usage)):
        total = totals.setdefault((partner_id, user_ref, token_id, bucket), [0, 0])
        total[0] += amount
        total[1] += count
    if bind.dialect.name == "sqlite":
        op.drop_table("limit_usage")
        _create("limit_usage", sharded=False)
    else:
        bind.execute(sa.delete(usage))
        op.execute(
            "ALTER TABLE limit_usage DROP PRIMARY KEY, DROP COLUMN shard, "
            "ADD PRIMARY KEY (partner_id, user_ref, token_id, bucket)"
        )
    if totals:
        bind.execute(
            sa.insert(usage),
            [
                dict(zip([*SCOPE, "amount", "count"], (*key, amount, count), strict=True))
                for key, (amount, count) in totals.items()
            ],
        )
