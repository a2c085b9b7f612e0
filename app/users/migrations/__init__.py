"""The users module's migration history: revisions of the users_* tables, in alembic_version_users."""
