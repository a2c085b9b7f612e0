"""Dead letters kept in the database, for the in-memory bus (whose broker keeps nothing).

Revision bus_0002, after bus_0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "bus_0002"
down_revision = "bus_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_dead_letter",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("occurred_at", db.UTCDateTime(), nullable=False),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("record_key", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at", db.UTCDateTime(), nullable=False),
        sa.Column("replaying", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", "group_name", name="uq_bus_dead_letter_message_group"),
    )
    with op.batch_alter_table("bus_dead_letter", schema=None) as batch_op:
        batch_op.create_index("ix_bus_dead_letter_group_key", ["group_name", "record_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bus_dead_letter", schema=None) as batch_op:
        batch_op.drop_index("ix_bus_dead_letter_group_key")

    op.drop_table("bus_dead_letter")
