"""SQLite through app.db's engine: one trip to the connection's thread per statement, nothing left open."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import Integer, String, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.util import greenlet_spawn

from app import db, sqlite


class Base(DeclarativeBase):
    pass


class Seat(Base):
    __tablename__ = "seat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    row: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"version_id_col": version}


Trips = collections.Counter[str]


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    # A short busy timeout: a write lock left behind shows as an error here, not as a 30 s wait.
    engine = db.create_engine(sqlite_url, connect_args={"timeout": 0.5})
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    """Calls made on the connections' threads, by the name of what ran there."""
    counted: Trips = collections.Counter()
    hop = sqlite.Connection._execute

    async def counting(self: sqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        counted[fn.__name__] += 1
        return await hop(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(sqlite.Connection, "_execute", counting)
    return counted


async def test_an_insert_and_its_commit_are_two_trips_to_the_thread(engine: AsyncEngine, trips: Trips) -> None:
    sessions = db.create_sessionmaker(engine)
    async with sessions() as session:
        await session.execute(select(Seat))  # a connection from the pool, made and warm
        trips.clear()
        session.add(Seat(id=1, row="A"))
        await session.commit()
    # The stock adapter makes four for the statement (cursor, execute, close, and a rollback when
    # the connection goes back to the pool): 2 here is what makes the write path cheap.
    assert dict(trips) == {"_run": 1, "commit": 1}


async def test_a_query_reads_all_its_rows_in_its_one_trip(engine: AsyncEngine, trips: Trips) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(Seat), [{"id": n, "row": f"R{n}", "version": 1} for n in range(1, 151)])
    async with engine.connect() as connection:
        trips.clear()
        result = await connection.execute(select(Seat.id, Seat.row).order_by(Seat.id))
        assert trips == {"_run": 1}
        assert result.keys() == ["id", "row"]
        first, *rest = result.all()
        assert tuple(first) == (1, "R1") and len(rest) == 149
        # Several rows at a time (server-side cursors fetch this way): from what the trip read.
        streamed = await connection.stream(select(Seat.id).order_by(Seat.id))
        sizes = [len(part) async for part in streamed.partitions(64)]
        assert sizes == [64, 64, 22]
        assert (await connection.execute(select(Seat.row).where(Seat.id == 999))).first() is None


async def test_rowcount_holds_up_optimistic_locking(engine: AsyncEngine) -> None:
    sessions = db.create_sessionmaker(engine)
    async with sessions() as session:
        session.add(Seat(id=1, row="A"))
        await session.commit()
    async with engine.begin() as connection:
        changed = await connection.execute(update(Seat).where(Seat.id == 1).values(row="B"))
        assert changed.rowcount == 1
        missed = await connection.execute(update(Seat).where(Seat.id == 2).values(row="B"))
        assert missed.rowcount == 0
    # A stale copy's update matches no row: SQLAlchemy can tell only from the rowcount.
    async with sessions() as first, sessions() as second:
        mine = await first.get_one(Seat, 1)
        theirs = await second.get_one(Seat, 1)
        mine.row = "C"
        await first.commit()
        theirs.row = "D"
        with pytest.raises(Exception, match="expected to update 1 row"):
            await second.commit()


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(engine: AsyncEngine) -> None:
    # Below the ORM, where nothing else ends the transaction: only the pool's reset can.
    def write_and_give_back() -> None:
        raw = engine.sync_engine.raw_connection()
        raw.cursor().execute("INSERT INTO seat (id, row, version) VALUES (7, 'left open', 1)")
        assert raw.driver_connection is not None and raw.driver_connection.in_transaction
        raw.close()  # back to the pool, still holding SQLite's write lock

    await greenlet_spawn(write_and_give_back)
    async with engine.begin() as connection:
        # Without the rollback this would fail on the lock after 0.5 s, or find the row.
        await connection.execute(text("INSERT INTO seat (id, row, version) VALUES (8, 'next', 1)"))
        rows = (await connection.execute(select(Seat.id))).scalars().all()
    assert rows == [8]


async def test_a_commit_that_fails_leaves_no_transaction_behind(engine: AsyncEngine, sqlite_url: str) -> None:
    # A deferred constraint fails the COMMIT itself: SQLite keeps the transaction open, while
    # SQLAlchemy counts it ended. The pool's reset must still roll it back, or the write lock stays.
    gig = "CREATE TABLE gig (id INTEGER PRIMARY KEY, hall INTEGER REFERENCES hall (id) DEFERRABLE INITIALLY DEFERRED)"
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE hall (id INTEGER PRIMARY KEY)"))
        await connection.execute(text(gig))
    sessions = db.create_sessionmaker(engine)

    async def book_a_gig_in_no_hall() -> None:
        async with sessions() as session:
            await session.execute(text("INSERT INTO gig VALUES (1, 99)"))
            await session.commit()

    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        await book_a_gig_in_no_hall()
    other = db.create_engine(sqlite_url, connect_args={"timeout": 0.5})  # another process, say
    try:
        async with other.begin() as connection:
            await connection.execute(text("INSERT INTO hall VALUES (1)"))
    finally:
        await other.dispose()
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM gig"))).scalar_one() == 0
