"""Propagation as a user sees it: an edit's 200, then the live stream's record of the orders module applying it.

One ``ticketing run`` per bus (in memory, then NATS JetStream on a ``nats-server`` of this
script's own), each on a fresh SQLite file. A watcher holds ``/demo/events`` open; one user
edits one ticket at a time. For each edit the figure is the time from the edit's 200 reaching
the client to the stream's ``applied`` record (group ``orders-service``, that ticket, that
version) reaching the client: the event's trip through outbox, relay, bus, listener and
replica write, less whatever of it overlapped the answer's way back. It can be negative:
the replica may be written before the answer arrives.

The baseline, measured in the same run against the same process: one ``GET /api/tickets/{id}``
round trip (an HTTP answer's cost on this machine at this moment). Printed: p50, p90, p99 of
each, and propagation p50 as a multiple of the baseline p50.

Run: ``python benchmarks/propagation.py [--edits N] [--bus memory|nats|both] [--log-level LEVEL]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec

from app.common.auth import CurrentUser, Tokens
from tests.nats_server import running_server
from tests.processes import AppProcess

SECRET = "benchmark-secret-of-decent-length"
ORDERS_GROUP = "orders-service"


class Watcher:
    """The live stream, read as it comes: when each (ticket, version) was applied by the orders module."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.arrived = asyncio.Event()
        self.ready = asyncio.Event()

    async def watch(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/demo/events", timeout=None) as response:
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                    if kind == "hello":
                        self.ready.set()
                elif line.startswith("data:") and kind == "bus":
                    record = msgspec.json.decode(line.partition(":")[2].strip())
                    if record["result"] == "applied" and record.get("group") == ORDERS_GROUP:
                        self.seen[(record["ticketId"], record["version"])] = time.perf_counter()
                        self.arrived.set()

    async def wait_for(self, ticket_id: str, version: int, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while (ticket_id, version) not in self.seen:
                self.arrived.clear()
                await self.arrived.wait()
        return self.seen[(ticket_id, version)]


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99)]
    return "p50 {:6.2f} ms   p90 {:6.2f} ms   p99 {:6.2f} ms".format(*(1000 * v for v in at))


@contextlib.asynccontextmanager
async def app_on(bus: str, directory: Path, log_level: str) -> AsyncIterator[str]:
    env = {
        "TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex}.db'}",
        "TICKETING_BUS_URL": bus,
        "TICKETING_JWT_SECRET": SECRET,
    }
    app = AppProcess(env, cwd=directory, args=["--log-level", log_level])
    await app.start()
    try:
        yield app.url
    finally:
        await app.stop()


async def measure(url: str, edits: int) -> tuple[list[float], list[float]]:
    token = Tokens(SECRET).issue(CurrentUser(str(uuid.uuid4()), "bench@example.com"))
    headers = {"Authorization": f"Bearer {token}"}
    watcher = Watcher()
    async with httpx.AsyncClient(base_url=url) as stream_client, httpx.AsyncClient(base_url=url) as client:
        watching = asyncio.create_task(watcher.watch(stream_client))
        try:
            await asyncio.wait_for(watcher.ready.wait(), 10)
            created = await client.post("/api/tickets", json={"title": "a show", "price": 10}, headers=headers)
            ticket_id = created.json()["id"]
            await watcher.wait_for(ticket_id, 0)
            propagation, baseline = [], []
            for n in range(edits):
                started = time.perf_counter()
                await client.get(f"/api/tickets/{ticket_id}")
                baseline.append(time.perf_counter() - started)
                body = {"title": f"edit {n}", "price": 10 + n % 90}
                response = await client.put(f"/api/tickets/{ticket_id}", json=body, headers=headers)
                answered = time.perf_counter()
                if response.status_code != 200:
                    raise RuntimeError(f"PUT answered {response.status_code}: {response.text}")
                applied = await watcher.wait_for(ticket_id, response.json()["version"])
                propagation.append(applied - answered)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    return propagation, baseline


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--bus", choices=["memory", "nats", "both"], default="both")
    parser.add_argument(
        "--log-level", default="INFO", help="the app's; INFO (the default run) logs two lines per event"
    )
    args = parser.parse_args()
    buses = ["memory", "nats"] if args.bus == "both" else [args.bus]
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        for bus in buses:
            url = "memory://"
            if bus == "nats":
                url = stack.enter_context(running_server()).url
            async with app_on(url, Path(folder), args.log_level) as app_url:
                await measure(app_url, 50)  # warm-up: connections, caches, the JIT-less first calls
                propagation, baseline = await measure(app_url, args.edits)
            print(f"{bus:6} bus, {args.edits} edits one at a time, log level {args.log_level}:", flush=True)
            print(f"  edit's 200 -> orders module applied it  {percentiles(propagation)}")
            print(f"  baseline: one GET round trip            {percentiles(baseline)}")
            ratio = statistics.median(propagation) / statistics.median(baseline)
            print(f"  propagation p50 / GET p50: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
