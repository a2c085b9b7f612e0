"""The write path against its floor over real HTTP: two servers, one load generator, one run.

Floor: ``benchmarks/floor.py`` under uvicorn, one INSERT per POST.
Ours:  ``ticketing run`` (all three modules): each POST /api/tickets commits the ticket and its
       outbox event; the relay publishes; the orders module's listener writes the replica.

Each server is its own process on its own fresh database, and the load comes from this process
(httpx, ``--concurrency`` connections). Rounds alternate floor and ours, so that a noisy
neighbour hurts both alike. Printed per round, then the medians:

- creates/s answered, for each, and ours/floor;
- ours settled: creates/s until every replica is written too (``/ops/bus`` pending back to 0).

Run: ``python benchmarks/write_path_http.py [--requests N] [--concurrency C] [--rounds R] [--database sqlite|URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from load import add_common_arguments, database, post_many

from app.common.auth import CurrentUser, Tokens

BENCHMARKS = Path(__file__).resolve().parent
SECRET = "benchmark-secret-of-decent-length"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def server(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[str]:
    """A server process on ``port``, ready when it answers; stopped with SIGTERM afterwards."""
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"{command} exited with {process.returncode}")
                try:
                    await client.get(url + "/", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{command} did not answer within 30 s") from None
                    await asyncio.sleep(0.05)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def load(url: str, path: str, requests: int, concurrency: int, headers: dict[str, str]) -> float:
    """Seconds to get ``requests`` POSTs to ``url`` answered 201, ``concurrency`` at a time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        return await post_many(client, path, requests, concurrency, headers)


async def settled(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        # Polled at 1 ms: what is measured takes hundreds of times longer.
        while (await client.get("/ops/bus")).json()["pending"]:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def one_round(args: argparse.Namespace, directory: Path, number: int) -> dict[str, float]:
    port = free_port()
    floor_env = {
        "FLOOR_DATABASE_URL": database(args.database, directory, f"floor{number}"),
        "FLOOR_ENGINE": args.floor_engine,
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "floor:create", "--factory", "--app-dir", str(BENCHMARKS)]
    floor_command = [*uvicorn, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    async with server(floor_command, floor_env, port) as url:
        floor_seconds = await load(url, "/rows", args.requests, args.concurrency, {})

    port = free_port()
    ours_env = {
        "TICKETING_DATABASE_URL": database(args.database, directory, f"ours{number}"),
        "TICKETING_BUS_URL": args.bus,
        "TICKETING_JWT_SECRET": SECRET,
    }
    ours_command = [sys.executable, "-m", "app", "run", "--port", str(port), "--log-level", args.log_level]
    token = Tokens(SECRET).issue(CurrentUser(str(uuid.uuid4()), "bench@example.com"))
    async with server(ours_command, ours_env, port) as url:
        started = time.perf_counter()
        ours_seconds = await load(
            url, "/api/tickets", args.requests, args.concurrency, {"Authorization": f"Bearer {token}"}
        )
        await settled(url)
        settled_seconds = time.perf_counter() - started
    return {
        "floor": args.requests / floor_seconds,
        "ours": args.requests / ours_seconds,
        "settled": args.requests / settled_seconds,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, "server")
    parser.add_argument(
        "--log-level", default="WARNING", help="ours' log level; INFO adds the seed's two lines per event"
    )
    args = parser.parse_args()

    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        for number in range(args.rounds):
            figures = await one_round(args, Path(directory), number)
            rounds.append(figures)
            print(
                f"round {number + 1}/{args.rounds}: floor {figures['floor']:6.0f}/s  ours {figures['ours']:6.0f}/s "
                f"(ratio {figures['ours'] / figures['floor']:.2f})  ours settled {figures['settled']:6.0f}/s",
                flush=True,
            )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    print(
        f"\nmedian of {args.rounds} rounds, {args.requests} creates at concurrency {args.concurrency} over HTTP, "
        f"on {args.database}, bus {args.bus}, log level {args.log_level}, floor engine {args.floor_engine}:\n"
        f"  floor (one insert per request)  {median('floor'):6.0f} creates/s\n"
        f"  ours, answered                  {median('ours'):6.0f} creates/s   "
        f"ratio to floor {statistics.median(r['ours'] / r['floor'] for r in rounds):.2f}\n"
        f"  ours, replicas written too      {median('settled'):6.0f} creates/s   "
        f"ratio to floor {statistics.median(r['settled'] / r['floor'] for r in rounds):.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
