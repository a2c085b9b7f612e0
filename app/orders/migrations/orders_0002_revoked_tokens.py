"""The tokens signed out, as the orders module keeps them (app/common/revocation.py).

Revision orders_0002, after orders_0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "orders_0002"
down_revision = "orders_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders_revoked_token",
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    op.create_index("ix_orders_revoked_token_revoked_at", "orders_revoked_token", ["revoked_at"])


def downgrade() -> None:
    op.drop_table("orders_revoked_token")
