"""The tokens signed out, as the users module keeps them (app/common/revocation.py), and the sign-in
failures the failure window counts.

Revision users_0002, after users_0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "users_0002"
down_revision = "users_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users_revoked_token",
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    op.create_index("ix_users_revoked_token_revoked_at", "users_revoked_token", ["revoked_at"])
    op.create_table(
        "users_sign_in_failure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failed_at", db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_users_sign_in_failure_pair", "users_sign_in_failure", ["email", "client", "failed_at"])
    op.create_index("ix_users_sign_in_failure_failed_at", "users_sign_in_failure", ["failed_at"])


def downgrade() -> None:
    op.drop_table("users_sign_in_failure")
    op.drop_table("users_revoked_token")
