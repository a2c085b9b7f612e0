"""Outbox rows claimed by the relay relaying them, for a lease: several processes share one outbox.

Revision bus_0003, after bus_0002. Rows written before it are nobody's: the first relay to look
takes them over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import db

revision = "bus_0003"
down_revision = "bus_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bus_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bus_outbox", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
