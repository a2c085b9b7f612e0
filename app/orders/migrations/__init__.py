"""The orders module's migration history: revisions of the orders_* tables, in alembic_version_orders."""
