"""What both write-path benchmarks share: the load they send and where their databases live."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx


async def post_many(
    client: httpx.AsyncClient, path: str, requests: int, concurrency: int, headers: dict[str, str]
) -> float:
    """Seconds to get ``requests`` creates answered 201, ``concurrency`` at a time."""
    left = iter(range(requests))

    async def worker() -> None:
        for n in left:
            response = await client.post(path, json={"title": f"ticket {n}", "price": 10 + n % 90}, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def database(choice: str, directory: Path, name: str) -> str:
    """A fresh SQLite file in ``directory`` for 'sqlite', else the URL given."""
    return f"sqlite+aiosqlite:///{directory / name}.db" if choice == "sqlite" else choice


def add_common_arguments(parser: argparse.ArgumentParser, what_gets_a_file: str) -> None:
    """The options both write-path benchmarks take."""
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database", default="sqlite", help=f"'sqlite' (a fresh file per {what_gets_a_file}) or a database URL"
    )
    parser.add_argument("--bus", default="memory://")
    parser.add_argument(
        "--floor-engine",
        choices=["same", "plain"],
        default="same",
        help="the floor's engine: configured as the app's (default), or SQLAlchemy's plain defaults",
    )
