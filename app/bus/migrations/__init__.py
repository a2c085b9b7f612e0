"""The bus's migration history: revisions of the bus_* tables (the outbox), in alembic_version_bus."""
