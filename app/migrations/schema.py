"""Where a database's histories stand, and bringing them to their heads, one process at a time."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy
from sqlalchemy import Connection, column, inspect, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.migrations.history import History, MigrationError, revisions
from app.settings import Migrate

if TYPE_CHECKING:
    from alembic.operations.ops import MigrationScript
    from alembic.runtime.migration import MigrationContext

# Alembic itself is imported by the functions below that run it: only when there is work to do.

# Any number does, as long as every process of every release takes the same one.
LOCK_KEY = int.from_bytes(b"ticketin", "big")
# Alembic's `context` and `op` are module-level proxies to the command running: two commands
# interleaved on one event loop (two databases upgraded at once) would run on each other's.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _alembic_turn() -> asyncio.Lock:
    return _turns.setdefault(asyncio.get_running_loop(), asyncio.Lock())


class State(StrEnum):
    UP_TO_DATE = "up to date"
    BEHIND = "behind"
    #: Tables made before migrations (a release that used create_all), and no version table.
    UNVERSIONED = "unversioned"
    #: A revision this release does not have: a newer release has migrated the database.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Status:
    history: History
    state: State
    revisions: frozenset[str] = frozenset()

    def __str__(self) -> str:
        if self.state is State.UNKNOWN:
            found = ", ".join(sorted(self.revisions))
            return f"{self.history.name}: at {found}, a revision this release does not know (a newer one migrated it)"
        return f"{self.history.name}: {self.state}"


@dataclass(frozen=True)
class Upgrade:
    history: str
    done: str
    changed: bool

    def __str__(self) -> str:
        return f"{self.history}: {self.done}"


async def statuses(engine: AsyncEngine, histories: Sequence[History]) -> list[Status]:
    """Where each history stands. Reads the table names and one version table per history; writes nothing."""
    async with engine.connect() as connection:
        return await connection.run_sync(_statuses, histories)


def _statuses(connection: Connection, histories: Sequence[History]) -> list[Status]:
    tables = set(inspect(connection).get_table_names())
    return [_status(connection, history, tables) for history in histories]


def _status(connection: Connection, history: History, tables: set[str]) -> Status:
    if history.version_table not in tables:
        made_before = any(history.owns(name) for name in tables)
        return Status(history, State.UNVERSIONED if made_before else State.BEHIND)
    version = table(history.version_table, column("version_num"))
    found = frozenset(connection.scalars(select(version.c.version_num)))
    expected = revisions(history.location)
    if found == expected.heads:
        return Status(history, State.UP_TO_DATE, found)
    if found <= expected.known:
        return Status(history, State.BEHIND, found)
    return Status(history, State.UNKNOWN, found - expected.known)


async def verify(engine: AsyncEngine, histories: Sequence[History], migrate: Migrate) -> None:
    """Raise MigrationError unless the app can run here: with ``off``, every history must be up to date;
    with ``auto``, each one that is not must be upgradable. Writes nothing.
    """
    pending = [status for status in await statuses(engine, histories) if status.state is not State.UP_TO_DATE]
    for status in pending:
        if status.state is State.UNKNOWN:
            raise MigrationError(str(status))
    if pending and migrate == "off":
        found = "; ".join(map(str, pending))
        raise MigrationError(
            f"the database {db.describe(engine)} is behind ({found}) and TICKETING_MIGRATE=off: "
            "run `ticketing db upgrade` first"
        )
    unversioned = [status.history for status in pending if status.state is State.UNVERSIONED]
    if unversioned:
        async with _alembic_turn(), engine.connect() as connection:
            for history in unversioned:
                await connection.run_sync(_adoptable, history)


async def upgrade(engine: AsyncEngine, histories: Sequence[History]) -> list[Upgrade]:
    """Bring every history to its head, adopting tables made before migrations.

    When everything is up to date this costs what ``statuses`` costs. Otherwise the work is done
    in one transaction under a lock, so that processes starting at once on one database upgrade
    it one after the other, and each finds what the one before it did.
    """
    if all(status.state is State.UP_TO_DATE for status in await statuses(engine, histories)):
        return [Upgrade(history.name, "already up to date", changed=False) for history in histories]
    async with _alembic_turn(), _exclusive(engine) as connection:
        return [await connection.run_sync(_upgrade, history) for history in histories]


@asynccontextmanager
async def _exclusive(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that no other process's upgrade runs beside; committed when the block ends."""
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Held until commit; DDL is transactional there, so the next process sees all or nothing.
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            # SQLite's one write lock, taken before the first read rather than at the first write.
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection
        await connection.commit()


def _upgrade(connection: Connection, history: History) -> Upgrade:
    from alembic import command

    from app.migrations.environment import alembic_config

    # Read again under the lock: another process may have done the work meanwhile.
    status = _status(connection, history, set(inspect(connection).get_table_names()))
    if status.state is State.UP_TO_DATE:
        return Upgrade(history.name, "already up to date", changed=False)
    if status.state is State.UNKNOWN:
        raise MigrationError(str(status))
    config = alembic_config(history, connection)
    heads, at, done = revisions(history.location).heads, status.revisions, []
    if status.state is State.UNVERSIONED:
        base = _adoptable(connection, history)
        command.stamp(config, base)
        at = frozenset({base})
        done.append(f"adopted the tables made before migrations at {base}")
    if at != heads:
        command.upgrade(config, "head")
        done.append(f"upgraded to {', '.join(sorted(heads))}")
    return Upgrade(history.name, ", ".join(done), changed=True)


def _adoptable(connection: Connection, history: History) -> str:
    """The base revision, when the tables found hold everything it makes; MigrationError naming what they lack."""
    missing = sorted(_made_by_base(history) - _shape(connection, history))
    if missing:
        raise MigrationError(
            f"{history.name}: cannot adopt the tables made before migrations, they lack {', '.join(missing)} "
            f"(restore them from a backup of release 0.1.0, or start on an empty database)"
        )
    return revisions(history.location).base


@functools.cache
def _made_by_base(history: History) -> frozenset[str]:
    # What the previous release made is what the base revision makes: run it on a scratch
    # database and look, rather than keep a second description of it by hand.
    from alembic import command

    from app.migrations.environment import alembic_config

    engine = sqlalchemy.create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(history, connection), revisions(history.location).base)
            return frozenset(_shape(connection, history))
    finally:
        engine.dispose()


def _shape(connection: Connection, history: History) -> set[str]:
    """The history's tables, their columns and named indexes: ``users_user``, ``users_user.email``, ``index ix_…``."""
    inspector = inspect(connection)
    shape: set[str] = set()
    for name in filter(history.owns, inspector.get_table_names()):
        shape.add(name)
        shape.update(f"{name}.{found['name']}" for found in inspector.get_columns(name))
        shape.update(f"index {found['name']}" for found in inspector.get_indexes(name) if found["name"])
    return shape


def revise(history: History, message: str) -> Path | None:
    """Write ``history``'s next revision: what its models have that its revisions do not make yet.

    Autogenerated against a scratch SQLite database at the history's head; None when there is
    nothing to write. Autogenerate sees tables, columns, types and indexes, not renames or data:
    read the file before committing it.
    """
    from alembic import command
    from alembic.script import Script

    from app.migrations.environment import alembic_config

    written = [path for path in history.location.glob("*.py") if path.name != "__init__.py"]
    rev_id = f"{history.name}_{len(written) + 1:04d}"
    engine = sqlalchemy.create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            config = alembic_config(history, connection)
            command.upgrade(config, "head")
            script = command.revision(
                config, message=message, autogenerate=True, rev_id=rev_id, process_revision_directives=_unless_empty
            )
    finally:
        engine.dispose()
    return Path(script.path) if isinstance(script, Script) else None


def _unless_empty(_context: MigrationContext, _revision: object, directives: list[MigrationScript]) -> None:
    # A revision that changes nothing would only lengthen the history.
    upgrade_ops = directives[0].upgrade_ops
    if upgrade_ops is not None and upgrade_ops.is_empty():
        directives[:] = []
