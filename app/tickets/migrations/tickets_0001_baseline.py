"""Baseline: the tickets tables as release 0.1.0 made them (with create_all).

Revision tickets_0001, the first of its history. A database made by that release is adopted at
this revision (stamped, its rows kept) rather than migrated through it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "tickets_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickets_ticket",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("price", db.Money(), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tickets_order",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tickets_order_ticket", "tickets_order", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_tickets_order_ticket", table_name="tickets_order")
    op.drop_table("tickets_order")
    op.drop_table("tickets_ticket")
