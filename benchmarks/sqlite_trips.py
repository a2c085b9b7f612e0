"""Trips to SQLite's connection threads per create, app.db's engine against aiosqlite as SQLAlchemy ships it.

Every call aiosqlite runs on a connection's own thread is a queue hand-off there and a wake-up of
the event loop back. This counts them for ``POST /api/tickets`` in one process (httpx's ASGI
transport, the in-memory bus): the ticket and its outbox row, the relay's marking, the orders
module's replica, until ``/ops/bus`` is settled. Baseline, in the same run: the same app on a
stock engine (``create_async_engine`` with SQLAlchemy's aiosqlite adapter and its pool's rollback
on return). Printed per engine, one create at a time and ``--concurrency`` at once: trips per
create by what ran on the thread, and how many events the orders listener got per batch.

Run: ``python benchmarks/sqlite_trips.py [--creates N] [--concurrency C]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import aiosqlite.core
import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import db
from app.bus.rules import Rules
from app.common.auth import CurrentUser, Tokens
from app.main import create_app
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings

SECRET = "benchmark-secret-of-decent-length"


def stock_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """SQLAlchemy's aiosqlite as it comes, with the app's pragmas (WAL, NORMAL sync) and timeout."""
    engine = create_async_engine(url, connect_args={"timeout": db.SQLITE_TIMEOUT}, **kwargs)
    event.listen(engine.sync_engine, "connect", db._sqlite_pragmas)
    return engine


@contextmanager
def counting() -> Iterator[tuple[collections.Counter[str], collections.Counter[int]]]:
    """Trips by the name of what ran on the thread; listener batches by their size."""
    trips: collections.Counter[str] = collections.Counter()
    batches: collections.Counter[int] = collections.Counter()
    hop, run_batch = aiosqlite.core.Connection._execute, Rules.run_batch

    async def counted_hop(self: Any, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips[getattr(function, "__name__", type(function).__name__)] += 1
        return await hop(self, function, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def counted_batch(self: Rules, handler: Any, deliveries: Sequence[Any], tries: Sequence[Any]) -> Any:
        batches[len(deliveries)] += 1
        return await run_batch(self, handler, deliveries, tries)

    # Wrapped, not replaced: each call still runs as it would, and is counted on the way.
    with (
        patch.object(aiosqlite.core.Connection, "_execute", counted_hop),
        patch.object(Rules, "run_batch", counted_batch),
    ):
        yield trips, batches


async def measure(
    engine: Callable[..., AsyncEngine], directory: Path, creates: int, concurrency: int
) -> tuple[collections.Counter[str], collections.Counter[int]]:
    url = f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
    settings = Settings(
        database=DatabaseSettings(url=url),
        bus=BusSettings(url="memory://"),
        auth=AuthSettings(jwt_secret=SECRET, generated_secret=False),
    )
    original, db.create_engine = db.create_engine, engine
    try:
        app = create_app(settings)
    finally:
        db.create_engine = original
    runtime = app.state.runtime
    await runtime.start()
    token = Tokens(SECRET).issue(CurrentUser(str(uuid.uuid4()), "bench@example.com"))
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def settled() -> None:
                while (await client.get("/ops/bus")).json()["pending"] or runtime.relay.backlog:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)

            async def create() -> None:
                response = await client.post("/api/tickets", json={"title": "t", "price": 5}, headers=headers)
                assert response.status_code == 201, response.text

            for _ in range(20):  # warm: connections made, statements compiled
                await create()
            await settled()
            await runtime.relay.flush()
            with counting() as (trips, batches):

                async def one_after_another(count: int) -> None:
                    for _ in range(count):
                        await create()

                await asyncio.gather(*(one_after_another(creates // concurrency) for _ in range(concurrency)))
                await settled()
                await runtime.relay.flush()
            return trips, batches
    finally:
        await runtime.stop()


def describe(batches: collections.Counter[int]) -> str:
    sizes = {"1": 0, "2-9": 0, "10+": 0}
    for size, count in batches.items():
        sizes["1" if size == 1 else "2-9" if size < 10 else "10+"] += count
    return ", ".join(f"{count} of {name}" for name, count in sizes.items())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        totals: dict[tuple[str, int], float] = {}
        for name, engine in (("aiosqlite as shipped", stock_engine), ("app.db's engine", db.create_engine)):
            for concurrency in (1, args.concurrency):
                trips, batches = await measure(engine, Path(directory), args.creates, concurrency)
                per_create = sum(trips.values()) / args.creates
                totals[name, concurrency] = per_create
                calls = ", ".join(f"{call} {count / args.creates:.2f}" for call, count in trips.most_common())
                print(f"{name:21s} {concurrency:2d} at once: {per_create:5.2f} trips per create ({calls})")
                print(f"{'':21s}             listener batches: {describe(batches)}")
        for concurrency in (1, args.concurrency):
            ratio = totals["app.db's engine", concurrency] / totals["aiosqlite as shipped", concurrency]
            print(f"trips per create, ours / shipped, {concurrency} at once: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
