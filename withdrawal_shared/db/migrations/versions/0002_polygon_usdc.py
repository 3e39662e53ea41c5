"""Seed Polygon PoS and native USDC (data, not code: operators change these rows).

Polygon enforces a 25 gwei minimum tip; the cap and headroom are conservative defaults.
Local stacks point the USDC row at the test token they deploy (the bootstrap updates it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from withdrawal_shared.db.types import IntegerAmount

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GWEI = 10**9


def upgrade() -> None:
    chains = sa.table(
        "chains",
        sa.column("name", sa.String),
        sa.column("chain_id", sa.BigInteger),
        sa.column("native_symbol", sa.String),
        sa.column("native_decimals", sa.Integer),
        sa.column("confirmations", sa.Integer),
        sa.column("min_priority_fee_wei", IntegerAmount()),
        sa.column("max_fee_cap_wei", IntegerAmount()),
        sa.column("base_fee_headroom_pct", sa.Integer),
        sa.column("enabled", sa.Boolean),
    )
    tokens = sa.table(
        "tokens",
        sa.column("chain", sa.String),
        sa.column("symbol", sa.String),
        sa.column("contract_address", sa.String),
        sa.column("decimals", sa.Integer),
        sa.column("max_amount_base_units", IntegerAmount()),
        sa.column("enabled", sa.Boolean),
    )
    op.bulk_insert(
        chains,
        [
            {
                "name": "polygon",
                "chain_id": 137,
                "native_symbol": "POL",
                "native_decimals": 18,
                "confirmations": 5,
                "min_priority_fee_wei": 25 * GWEI,
                "max_fee_cap_wei": 5000 * GWEI,
                "base_fee_headroom_pct": 100,
                "enabled": True,
            }
        ],
    )
    op.bulk_insert(
        tokens,
        [
            {
                "chain": "polygon",
                "symbol": "USDC",
                "contract_address": "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359",
                "decimals": 6,
                "max_amount_base_units": 1_000_000 * 10**6,
                "enabled": True,
            }
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM tokens WHERE chain = 'polygon' AND symbol = 'USDC'")
    op.execute("DELETE FROM chains WHERE name = 'polygon'")
