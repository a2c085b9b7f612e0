"""The floor: a Litestar app on the same stack whose POST /rows does one INSERT and answers 201.

``floor_app(url)`` builds it in this process; ``create()`` is the factory uvicorn runs
(``python -m uvicorn floor:create --factory --app-dir benchmarks``), reading the database URL
from ``FLOOR_DATABASE_URL``.

Its engine is, by default, configured exactly as the app's (``app.db.create_engine``: SQLite in
WAL mode with ``synchronous=NORMAL``), the strict comparison. ``engine="plain"``
(``FLOOR_ENGINE=plain``) uses SQLAlchemy's defaults instead, as a floor written from scratch would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable

import msgspec
from litestar import Litestar, post
from sqlalchemy import MetaData, String
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app import db


class FloorBase(DeclarativeBase):
    metadata = MetaData()


class Row(FloorBase):
    __tablename__ = "floor_row"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price: Mapped[int] = mapped_column()


class RowIn(msgspec.Struct):
    title: str
    price: int


class RowOut(msgspec.Struct):
    id: str
    title: str
    price: int


def _build(engine: AsyncEngine, **options: object) -> Litestar:
    sessions = db.create_sessionmaker(engine)

    @post("/rows")
    async def create_row(data: RowIn) -> RowOut:
        async with sessions() as session:
            row = Row(id=str(uuid.uuid4()), title=data.title, price=data.price)
            session.add(row)
            await session.commit()
            return RowOut(row.id, row.title, row.price)

    return Litestar([create_row], logging_config=None, **options)  # type: ignore[arg-type]


async def _create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(FloorBase.metadata.create_all)


def _engine(url: str, kind: str) -> AsyncEngine:
    if kind == "plain":
        return create_async_engine(url)
    if kind != "same":
        raise ValueError(f"floor engine {kind!r}: choose 'same' or 'plain'")
    return db.create_engine(url)


async def floor_app(url: str, kind: str = "same") -> tuple[Litestar, Callable[[], Awaitable[None]]]:
    """The floor in this process, its tables made; and what disposes of its engine."""
    engine = _engine(url, kind)
    await _create_tables(engine)
    return _build(engine), engine.dispose


def create() -> Litestar:
    """The floor as uvicorn serves it: tables made at start-up, engine disposed at shutdown."""
    engine = _engine(os.environ["FLOOR_DATABASE_URL"], os.environ.get("FLOOR_ENGINE", "same"))

    async def start() -> None:
        await _create_tables(engine)

    async def stop() -> None:
        await engine.dispose()

    return _build(engine, on_startup=[start], on_shutdown=[stop])
