"""The tokens signed out, as the tickets module keeps them (app/common/revocation.py).

Revision tickets_0002, after tickets_0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "tickets_0002"
down_revision = "tickets_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickets_revoked_token",
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    op.create_index("ix_tickets_revoked_token_revoked_at", "tickets_revoked_token", ["revoked_at"])


def downgrade() -> None:
    op.drop_table("tickets_revoked_token")
