"""Database plumbing shared by every module: the engine, sessions, and column types."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolResetState
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_

from app import sqlite

#: Seconds a SQLite writer waits for the file's one write lock before it fails.
SQLITE_TIMEOUT = 30


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # Writers queue behind SQLite's single write lock rather than fail at once.
    connect_args = {"timeout": SQLITE_TIMEOUT, **kwargs.pop("connect_args", {})}
    arguments: list[Any] = []

    async def connect() -> sqlite.Connection:
        positional, named = arguments
        connection = sqlite.connect(*positional, **named)
        await connection  # opens it, on its thread
        return connection

    # A connection goes back to the pool after its session committed or rolled back: the pool's own
    # rollback on return would be one more trip to the connection's thread for nothing, so
    # _rollback_if_open does it only when a transaction is still open.
    engine = create_async_engine(url, async_creator=connect, pool_reset_on_return=None, **kwargs)
    # What aiosqlite.connect would get (file, uri, check_same_thread), as the dialect works it out
    # from the URL: known only once the engine exists, and read by connect() from then on.
    positional, named = engine.dialect.create_connect_args(engine.url)
    arguments[:] = [positional, {**named, **connect_args}]
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    event.listen(engine.sync_engine.pool, "reset", _rollback_if_open)
    return engine


def _rollback_if_open(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    # Nothing can be awaited from the garbage collector (the connection is terminated instead). A
    # Connection that says it ended the transaction is still asked: a COMMIT that failed (a deferred
    # constraint, a full disk) leaves SQLite's transaction open while SQLAlchemy counts it done.
    if not state.asyncio_safe or state.terminate_only:
        return
    if dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and the one writer work at the same time; NORMAL sync is durable
    # across application crashes, which is what the outbox needs.
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode, which it keeps once set.

    Switching a new file to WAL needs it to itself, and SQLite answers "database is locked" at once,
    without the busy timeout, when another process opened it in the same instant (several
    processes starting on one new file). Ask again for as long as the timeout would have waited,
    yielding to the event loop between tries: this runs inside the async engine's connect.
    """
    deadline = time.monotonic() + SQLITE_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            await_(asyncio.sleep(0.005))


def create_sessionmaker(
    engine: AsyncEngine, session_class: type[Session] = Session, **info: Any
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; ``session_class`` is the sync class behind them (the relay hooks its own)."""
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=session_class, info=info)


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def describe(engine: AsyncEngine) -> str:
    """A short name for the log line, e.g. ``SQLite ticketing.db``."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database or ':memory:'}"
    if url.get_backend_name() == "postgresql":
        return f"PostgreSQL {url.host}:{url.port or 5432}/{url.database}"
    return url.render_as_string(hide_password=True)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps none of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An amount with two decimals, stored as whole cents so that it is exact everywhere."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        cents = value * 100
        if cents != cents.to_integral_value():
            raise ValueError(f"{value} has more than two decimals")
        return int(cents)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value).scaleb(-2)
