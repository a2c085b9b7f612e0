"""Before serving: can this process reach its database and its bus, and run on the schema it finds?

An app that fails in its lifespan is reported by the ASGI server with tracebacks, which bury the
one line that matters; so ``ticketing run`` asks first, and says in one sentence what is wrong.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db, migrations
from app.bus import create_bus
from app.runtime import load_module
from app.settings import Settings


class StartupError(RuntimeError):
    """The app cannot start, for a reason one sentence can tell."""


async def preflight(settings: Settings) -> None:
    """Fail fast, with one clear sentence, when the database or the bus cannot be reached, or the
    schema is one the app cannot run on (see ``migrations.verify``)."""
    engine = db.create_engine(settings.database.url)
    try:
        await reach_database(engine)
        histories = migrations.histories([load_module(name) for name in settings.modules])
        await migrations.verify(engine, histories, settings.database.migrate)
    except migrations.MigrationError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        await engine.dispose()
    bus = create_bus(settings.bus.url)
    try:
        await bus.connect()
    except Exception as exc:
        raise StartupError(f"cannot reach the bus, {bus.describe()}: {_reason(exc)}") from exc
    finally:
        await bus.close()


async def reach_database(engine: AsyncEngine) -> None:
    """Raise StartupError, in one sentence, when ``engine``'s database does not answer."""
    threads_before = set(threading.enumerate())
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        await _let_driver_threads_finish(threads_before)
        raise StartupError(f"cannot reach the database {db.describe(engine)}: {_reason(exc)}") from exc


async def _let_driver_threads_finish(threads_before: set[threading.Thread], timeout: float = 5.0) -> None:
    """Wait for the worker threads a failed connection attempt left running.

    aiosqlite answers a failed connect by queueing its worker thread's stop without waiting for
    it; the thread's last callback then meets the caller's event loop closed and prints a
    traceback under the one-line error (omnilib/aiosqlite#241). asyncio's own executor threads
    (``asyncio_N``) live until the loop shuts them down, so they are not waited for.
    """
    for thread in set(threading.enumerate()) - threads_before:
        if not thread.name.startswith("asyncio_"):
            await asyncio.to_thread(thread.join, timeout)


def _reason(exc: BaseException) -> str:
    # The driver's own words, without SQLAlchemy's wrapping and links.
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__
