"""SQLite under asyncio with one trip to the connection's thread per statement.

aiosqlite runs each call on the connection's own thread, and SQLAlchemy's adapter makes four such
calls for one statement: make a cursor, execute, fetch the rows, close. Each trip is a queue hand-off
and a wake-up of the event loop, and on the write path they cost more than the statement itself.
These subclasses make it one: the cursor is made, the statement run and its rows read in a single
call on the thread, and closing has nothing left to do (the rows are read, so SQLite has already
reset the statement). The connection's thread, the queue and everything else stay aiosqlite's.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")
Parameters = Sequence[Any] | Mapping[str, Any]


class Cursor(aiosqlite.Cursor):
    """A cursor whose ``execute`` also reads the rows, on the connection's thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn, None)  # type: ignore[arg-type]  # the real one: _made, on the thread
        self._made: sqlite3.Cursor | None = None
        self._rows: collections.deque[Any] = collections.deque()
        self._arraysize = 1

    async def _on_thread(self, function: Callable[..., T], *args: Any) -> T:
        return cast(T, await self._conn._execute(function, *args))  # type: ignore[no-untyped-call]

    def _raw(self) -> sqlite3.Cursor:
        # Runs on the connection's thread: a file's connection allows others, :memory:'s does not.
        if self._made is None:
            self._made = self._conn._conn.cursor()
            self._made.arraysize = self._arraysize
        return self._made

    def _run(self, sql: str, parameters: Parameters) -> list[Any]:
        cursor = self._raw()
        cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description else []

    async def execute(self, sql: str, parameters: Parameters | None = None) -> Cursor:  # type: ignore[override]
        self._rows = collections.deque(await self._on_thread(self._run, sql, () if parameters is None else parameters))
        return self

    def _run_many(self, sql: str, parameters: Iterable[Parameters]) -> None:
        self._raw().executemany(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> Cursor:  # type: ignore[override]
        self._rows.clear()
        await self._on_thread(self._run_many, sql, parameters)
        return self

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self._arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(count, len(self._rows)))]

    async def close(self) -> None:
        # Every row is read by execute, so SQLite has already reset the statement; the sqlite3 cursor
        # goes with this object. Nothing is left that is worth a trip to the thread.
        self._rows.clear()

    @property
    def description(self) -> Any:
        return None if self._made is None else self._made.description

    @property
    def rowcount(self) -> int:
        return -1 if self._made is None else self._made.rowcount

    @property
    def lastrowid(self) -> int | None:
        return None if self._made is None else self._made.lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value


class Connection(aiosqlite.Connection):
    def cursor(self) -> Cursor:  # type: ignore[override]
        # No trip to make one: SQLAlchemy enters it (``async with``) and the thread makes the real one.
        return Cursor(self)


def connect(database: str, **kwargs: Any) -> Connection:
    """``aiosqlite.connect``, with cursors that make one trip per statement."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    connection = Connection(connector, iter_chunk_size=64)
    # As SQLAlchemy does for aiosqlite's own connections: the thread must not keep the process alive.
    connection._thread.daemon = True
    return connection
