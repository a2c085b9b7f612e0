"""Alembic's env.py for every history: the configuration is in app.migrations.environment, in code."""

from app.migrations.environment import run_env

run_env()
