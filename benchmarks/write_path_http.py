"""The write path against its floor over real HTTP: two servers, one load generator, one run.

Floor: ``benchmarks/floor.py`` under uvicorn, one INSERT per POST.
Ours:  ``ticketing run`` (all three modules): each POST /api/tickets commits the ticket and its
       outbox event; the relay publishes; the orders module's listener writes the replica.

Each server is its own process on its own fresh database. The load is ``wrk`` when it is on the
PATH (``--client wrk``, the default then: it costs the two cores least), otherwise httpx from
this process, ``--concurrency`` connections either way. Rounds alternate floor and ours, so that
a noisy neighbour hurts both alike. Printed per round, then the medians:

- creates/s answered, for each, and ours/floor; p50 latency (wrk);
- ours settled: creates/s until every replica is written too (``/ops/bus`` pending back to 0);
- CPU per create: the server process's user + system time (all its threads, settling included)
  over the creates it answered. It moves least with the neighbours' noise: the steadiest ratio.

Run: ``python benchmarks/write_path_http.py [--requests N | --seconds S] [--concurrency C] [--rounds R]
[--database sqlite|URL] [--client wrk|httpx]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
async def server(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[tuple[str, int]]:
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
        yield url, process.pid
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@dataclass
class Run:
    creates: int
    seconds: float
    p50_ms: float | None = None


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(args: argparse.Namespace, url: str, path: str, headers: dict[str, str]) -> Run:
    """POSTs to ``url``, ``concurrency`` at a time: a number of them (httpx) or for a while (wrk)."""
    if args.client == "httpx":
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:
            seconds = await post_many(client, path, args.requests, args.concurrency, headers)
        return Run(args.requests, seconds)
    script = Path(args.workdir) / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t1", f"-c{args.concurrency}", f"-d{args.seconds}s", "--latency", "-s", str(script), url + path]
    env = {**os.environ, "WRK_AUTHORIZATION": headers.get("Authorization", "")}
    done = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE)
    out = (await done.communicate())[0].decode()
    counted = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done.returncode != 0 or counted is None:
        raise RuntimeError(f"wrk failed: {out}")
    if "Non-2xx" in out:
        raise RuntimeError(f"{path} answered errors under wrk: {out}")
    seconds = float(counted.group(2)) / (1000 if counted.group(3) == "ms" else 1)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return Run(int(counted.group(1)), seconds, float(p50.group(1)) * unit[p50.group(2)] if p50 else None)


# Each request a new ticket; the token, if any, from the environment.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("WRK_AUTHORIZATION")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"title":"ticket ' .. n .. '","price":' .. (10 + n % 90) .. '}')
end
"""


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
    async with server(floor_command, floor_env, port) as (url, pid):
        cpu = cpu_seconds(pid)
        floor = await load(args, url, "/rows", {})
        floor_cpu = cpu_seconds(pid) - cpu

    port = free_port()
    ours_env = {
        "TICKETING_DATABASE_URL": database(args.database, directory, f"ours{number}"),
        "TICKETING_BUS_URL": args.bus,
        "TICKETING_JWT_SECRET": SECRET,
    }
    ours_command = [sys.executable, "-m", "app", "run", "--port", str(port), "--log-level", args.log_level]
    token = Tokens(SECRET).issue(CurrentUser(str(uuid.uuid4()), "bench@example.com"))
    async with server(ours_command, ours_env, port) as (url, pid):
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        ours = await load(args, url, "/api/tickets", {"Authorization": f"Bearer {token}"})
        await settled(url)
        settled_seconds = time.perf_counter() - started
        ours_cpu = cpu_seconds(pid) - cpu
    figures = {
        "floor": floor.creates / floor.seconds,
        "ours": ours.creates / ours.seconds,
        "settled": ours.creates / settled_seconds,
        "floor_cpu_ms": 1000 * floor_cpu / floor.creates,
        "ours_cpu_ms": 1000 * ours_cpu / ours.creates,
    }
    if floor.p50_ms is not None and ours.p50_ms is not None:
        figures |= {"floor_p50": floor.p50_ms, "ours_p50": ours.p50_ms}
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, "server")
    parser.add_argument(
        "--log-level", default="WARNING", help="ours' log level; INFO adds the seed's two lines per event"
    )
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--seconds", type=int, default=8, help="how long wrk sends, each server each round")
    args = parser.parse_args()

    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        args.workdir = directory
        for number in range(args.rounds):
            figures = await one_round(args, Path(directory), number)
            rounds.append(figures)
            latency = (
                f"  p50 {figures['floor_p50']:.1f} / {figures['ours_p50']:.1f} ms" if "ours_p50" in figures else ""
            )
            print(
                f"round {number + 1}/{args.rounds}: floor {figures['floor']:6.0f}/s  ours {figures['ours']:6.0f}/s "
                f"(ratio {figures['ours'] / figures['floor']:.2f})  ours settled {figures['settled']:6.0f}/s  "
                f"CPU/create {figures['floor_cpu_ms']:.2f} / {figures['ours_cpu_ms']:.2f} ms{latency}",
                flush=True,
            )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratio(ours: str, floor: str) -> float:
        return statistics.median(r[ours] / r[floor] for r in rounds)

    load_of = f"wrk for {args.seconds} s" if args.client == "wrk" else f"{args.requests} creates (httpx)"
    print(
        f"\nmedian of {args.rounds} rounds, {load_of} at concurrency {args.concurrency} over HTTP, "
        f"on {args.database}, bus {args.bus}, log level {args.log_level}, floor engine {args.floor_engine}:\n"
        f"  floor (one insert per request)  {median('floor'):6.0f} creates/s   "
        f"CPU {median('floor_cpu_ms'):.2f} ms each\n"
        f"  ours, answered                  {median('ours'):6.0f} creates/s   "
        f"ratio to floor {ratio('ours', 'floor'):.2f}\n"
        f"  ours, replicas written too      {median('settled'):6.0f} creates/s   "
        f"ratio to floor {ratio('settled', 'floor'):.2f}\n"
        f"  CPU per create, ours            {median('ours_cpu_ms'):.2f} ms        "
        f"floor/ours {ratio('floor_cpu_ms', 'ours_cpu_ms'):.2f}"
    )
    if all("ours_p50" in r for r in rounds):
        print(f"  p50 latency                     floor {median('floor_p50'):.1f} ms, ours {median('ours_p50'):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
