"""What the schema step of a start costs when the database is already up to date.

Before migrations, ``Runtime.start`` ran ``create_all`` for the bus's and every module's metadata:
it looked for each table and created none. Now it asks each history where it stands (the table
names, then one version table per history) and finds nothing to do. Both run against the same
migrated database, each time on a fresh engine, as a starting process would; printed are the
medians over ``--rounds``, then what a process pays once: reading the revision ids its scripts
declare (cached for the life of the process), and what it would pay only when there is work to
do, importing Alembic.

Run: ``python benchmarks/startup.py [--rounds N] [--database sqlite|URL]`` (a URL's database
is migrated first).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app import db, migrations
from app.migrations.history import read_revisions
from app.runtime import load_module
from app.settings import KNOWN_MODULES

HISTORIES = migrations.histories([load_module(name) for name in KNOWN_MODULES])
IMPORT_ALEMBIC = (
    "import time, sqlalchemy, litestar; started = time.perf_counter(); "
    "import alembic.command, alembic.script, alembic.runtime.migration, alembic.autogenerate; "
    "print(time.perf_counter() - started)"
)


async def create_all(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for history in HISTORIES:
            await connection.run_sync(history.metadata.create_all)


async def check(engine: AsyncEngine) -> None:
    upgraded = await migrations.upgrade(engine, HISTORIES)
    assert not any(step.changed for step in upgraded), "the database was not up to date"


async def timed(url: str, step: Callable[[AsyncEngine], Awaitable[None]]) -> float:
    engine = db.create_engine(url)
    started = time.perf_counter()
    await step(engine)
    seconds = time.perf_counter() - started
    await engine.dispose()
    return seconds


async def per_start(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}" if args.database == "sqlite" else args.database
        engine = db.create_engine(url)
        await migrations.upgrade(engine, HISTORIES)
        await engine.dispose()
        print(f"{db.describe(engine)}, {args.rounds} starts each, median:")
        before = statistics.median([await timed(url, create_all) for _ in range(args.rounds)])
        after = statistics.median([await timed(url, check) for _ in range(args.rounds)])
        print(f"  create_all (release 0.1.0):        {before * 1000:7.2f} ms")
        print(f"  migrations, nothing to do (now):   {after * 1000:7.2f} ms")


def once_per_process() -> None:
    started = time.perf_counter()
    for history in HISTORIES:
        read_revisions(history.location)
    scan = time.perf_counter() - started
    imported = float(subprocess.run([sys.executable, "-c", IMPORT_ALEMBIC], capture_output=True, check=True).stdout)
    print("once per process:")
    print(f"  reading {len(HISTORIES)} histories' revision ids:  {scan * 1000:7.2f} ms")
    print("only when there is work to do:")
    print(f"  importing Alembic:                 {imported * 1000:7.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--database", default="sqlite", help="'sqlite' (a fresh file) or a database URL")
    asyncio.run(per_start(parser.parse_args()))
    once_per_process()
