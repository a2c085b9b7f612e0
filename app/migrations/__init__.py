"""The database schema, by Alembic migrations: one history per module and one for the bus.

A process migrates exactly the tables of the modules it runs (``TICKETING_MODULES``) plus the
bus's outbox; each history keeps its own version table, so several share a database and a split
deployment migrates each database for what it holds. See docs/decisions/0007.
"""

from app.migrations.history import BUS, History, MigrationError, histories
from app.migrations.schema import State, Status, Upgrade, revise, statuses, upgrade, verify

__all__ = [
    "BUS",
    "History",
    "MigrationError",
    "State",
    "Status",
    "Upgrade",
    "histories",
    "revise",
    "statuses",
    "upgrade",
    "verify",
]
