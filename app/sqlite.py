"""SQLite under asyncio with one trip to the connection's thread per statement.

aiosqlite runs each call on the connection's own thread, and SQLAlchemy's adapter makes four such
calls for one statement: make a cursor, execute, fetch the rows, close. Each trip is a queue hand-off
and a wake-up of the event loop, and on the write path they cost more than the statement itself.
The cursor here makes them one call on the thread: a sqlite3 cursor is made, the statement run, its
rows read and the cursor closed, keeping what SQLAlchemy asks afterwards (the rows, description,
rowcount, lastrowid). Closing it there, not leaving it to the garbage collector, matters: a sqlite3
cursor that is still open when it is freed resets its statement on whatever thread frees it, while
the connection's own thread may be running that same cached statement for another cursor. Tried
that way, concurrent writers under load (the convergence tests on three workers) now and then found
a write transaction left open and waited out the 30 s busy timeout. The connection's thread, its
queue and everything else stay aiosqlite's.

The price: a result is read whole in its one trip, so ``stream()`` and ``yield_per`` hand it out in
parts but no longer bound the memory it takes. Nothing here streams; whatever comes to need it
should page instead (as the lists do).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import aiosqlite

T = TypeVar("T")
Parameters = Sequence[Any] | Mapping[str, Any]


class _Ran(NamedTuple):
    """What a statement left, read on the thread before its cursor was closed."""

    rows: list[Any]
    description: Any
    rowcount: int
    lastrowid: int | None


_NOTHING_YET = _Ran([], None, -1, None)


class Cursor(aiosqlite.Cursor):
    """A cursor whose ``execute`` runs, reads and closes in one call on the connection's thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn, None)  # type: ignore[arg-type]  # each statement makes its own, on the thread
        self._ran = _NOTHING_YET
        self._rows: collections.deque[Any] = collections.deque()
        self._arraysize = 1

    async def _on_thread(self, function: Callable[..., T], *args: Any) -> T:
        return cast(T, await self._conn._execute(function, *args))  # type: ignore[no-untyped-call]

    def _run(self, sql: str, parameters: Parameters) -> _Ran:
        # On the connection's thread: a :memory: database's connection allows no other.
        cursor = self._conn._conn.cursor()
        try:
            cursor.execute(sql, parameters)
            rows = cursor.fetchall() if cursor.description else []
            return _Ran(rows, cursor.description, cursor.rowcount, cursor.lastrowid)
        finally:
            cursor.close()

    def _run_many(self, sql: str, parameters: Iterable[Parameters]) -> _Ran:
        cursor = self._conn._conn.cursor()
        try:
            cursor.executemany(sql, parameters)
            return _Ran([], cursor.description, cursor.rowcount, cursor.lastrowid)
        finally:
            cursor.close()

    def _keep(self, ran: _Ran) -> Cursor:
        self._ran = ran
        self._rows = collections.deque(ran.rows)
        return self

    async def execute(self, sql: str, parameters: Parameters | None = None) -> Cursor:  # type: ignore[override]
        return self._keep(await self._on_thread(self._run, sql, () if parameters is None else parameters))

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> Cursor:  # type: ignore[override]
        return self._keep(await self._on_thread(self._run_many, sql, parameters))

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
        # The sqlite3 cursor was closed on the thread, in the statement's own trip.
        self._rows.clear()

    @property
    def description(self) -> Any:
        return self._ran.description

    @property
    def rowcount(self) -> int:
        return self._ran.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._ran.lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value


class Connection(aiosqlite.Connection):
    def cursor(self) -> Cursor:  # type: ignore[override]
        # No trip to make one: SQLAlchemy enters it (``async with``); each statement makes its own.
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
