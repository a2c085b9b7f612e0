"""Baseline: the orders tables as release 0.1.0 made them (with create_all).

Revision orders_0001, the first of its history. A database made by that release is adopted at
this revision (stamped, its rows kept) rather than migrated through it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "orders_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders_ticket",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("price", db.Money(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "orders_order",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # One live order per ticket: concurrent attempts to order a ticket race for this index.
    op.create_index(
        "uq_orders_order_live_ticket",
        "orders_order",
        ["ticket_id"],
        unique=True,
        sqlite_where=sa.text("status != 'cancelled'"),
        postgresql_where=sa.text("status != 'cancelled'"),
    )
    op.create_index("ix_orders_order_user", "orders_order", ["user_id", "created_at"])
    op.create_index("ix_orders_order_expiry", "orders_order", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_order_expiry", table_name="orders_order")
    op.drop_index("ix_orders_order_user", table_name="orders_order")
    op.drop_index("uq_orders_order_live_ticket", table_name="orders_order")
    op.drop_table("orders_order")
    op.drop_table("orders_ticket")
