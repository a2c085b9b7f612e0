"""Baseline: the users table as release 0.1.0 made it (with create_all).

Revision users_0001, the first of its history. A database made by that release is adopted at this
revision (stamped, its rows kept) rather than migrated through it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "users_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users_user",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )


def downgrade() -> None:
    op.drop_table("users_user")
