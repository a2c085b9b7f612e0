"""The tickets module's migration history: revisions of the tickets_* tables, in alembic_version_tickets."""
