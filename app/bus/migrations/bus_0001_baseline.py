"""Baseline: the outbox as release 0.1.0 made it (with create_all).

Revision bus_0001, the first of its history. A database made by that release is adopted at this
revision (stamped, its rows kept) rather than migrated through it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "bus_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("occurred_at", db.UTCDateTime(), nullable=False),
        sa.Column("published_at", db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_bus_outbox_unsent",
        "bus_outbox",
        ["occurred_at"],
        sqlite_where=sa.text("published_at IS NULL"),
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_bus_outbox_unsent", table_name="bus_outbox")
    op.drop_table("bus_outbox")
