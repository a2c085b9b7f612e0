"""Alembic's env.py for every history: the configuration is in app.migrations.history, in code."""

from app.migrations.history import run_env

run_env()
