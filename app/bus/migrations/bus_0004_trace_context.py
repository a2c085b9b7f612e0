"""The trace context an outbox event carries, when tracing is on (W3C traceparent, tracestate, as JSON).

Revision bus_0004, after bus_0003.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "bus_0004"
down_revision = "bus_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bus_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trace", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bus_outbox", schema=None) as batch_op:
        batch_op.drop_column("trace")
