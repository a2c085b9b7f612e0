"""Alembic, configured in code: there is no ``alembic.ini`` to find.

Every command gets a ``Config`` naming this folder (``env.py``, ``script.py.mako``) as the script
location and the history's own folder (``app/<module>/migrations/``) as its only version location,
and carries the history and an open connection in ``Config.attributes`` for ``env.py`` to use.
Imported only when there is Alembic work to do (see ``app.migrations.history``).
"""

from __future__ import annotations

import functools
from argparse import Namespace
from pathlib import Path
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.types import TypeEngine

from app import db
from app.migrations.history import History

HERE = Path(__file__).parent


def alembic_config(history: History, connection: Connection) -> Config:
    # quiet: the callers say what was done, in their own words.
    config = Config(cmd_opts=Namespace(quiet=True), attributes={"history": history, "connection": connection})
    config.set_main_option("script_location", _literal(HERE))
    # Split version_locations on os.pathsep only: a folder with a space in its name stays one folder.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", _literal(history.location))
    return config


def _literal(path: Path) -> str:
    # Config values go through configparser's interpolation, where % is special.
    return str(path).replace("%", "%%")


def context_options(history: History) -> dict[str, Any]:
    """How Alembic sees ``history``, for migrating, autogenerating and comparing alike."""
    return {
        "target_metadata": history.metadata,
        "version_table": history.version_table,
        "include_name": functools.partial(_include_name, history),
        # SQLite alters a table by copying it: autogenerate writes alterations in batch mode,
        # which does that on SQLite and plain ALTERs elsewhere.
        "render_as_batch": True,
        "render_item": _render_item,
    }


def compare_context(history: History, connection: Connection) -> MigrationContext:
    """A context for ``alembic.autogenerate.compare_metadata(context, history.metadata)``."""
    return MigrationContext.configure(connection, opts=context_options(history))


def _include_name(history: History, name: str | None, type_: str, _parents: object) -> bool:
    return type_ != "table" or (name is not None and history.owns(name))


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # The models' own column types (db.Money, db.UTCDateTime) are written as such, with their
    # import, so that a generated revision imports and says what the model says.
    if type_ == "type" and isinstance(obj, TypeEngine) and type(obj).__module__ == db.__name__:
        autogen_context.imports.add("from app import db")
        return f"db.{obj!r}"
    return False


def run_env() -> None:
    """What ``env.py`` does: run the command on the connection and history its ``Config`` carries."""
    config = context.config
    history: History = config.attributes["history"]
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("ticketing's migrations run on a connection (app.migrations), not from alembic.ini")
    context.configure(connection=connection, **context_options(history))
    with context.begin_transaction():
        context.run_migrations()
