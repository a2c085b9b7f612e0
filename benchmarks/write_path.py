"""The write path against its floor, in one run, on the same stack.

Floor: a Litestar app whose POST does one INSERT (SQLAlchemy async) and answers 201.
Ours:  POST /api/tickets: the ticket and its outbox event in one transaction, the relay
       publishing it, the orders module's listener writing the replica.

Both apps run in this process behind httpx's ASGI transport, driven by the same client with
the same concurrency, each against its own fresh database. Printed per round, then the medians:

- creates/s over HTTP (response received) for the floor and for ours, and their ratio;
- settled creates/s for ours: until every replica is written (``pending`` back to 0);
- propagation latency, commit of the ticket -> replica committed by the listener, in ms: with
  one create at a time (the cost of an event), at a steady rate below saturation, and under
  the saturating load above (queueing included).

Run: ``python benchmarks/write_path.py [--requests N] [--concurrency C] [--rounds R] [--database sqlite|URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from floor import floor_app
from load import add_common_arguments, database, post_many

from app.bus import Delivery, Verdict, signals
from app.clock import utcnow
from app.common.auth import CurrentUser, Tokens
from app.main import create_app
from app.runtime import Runtime
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings


async def drive(app: Any, path: str, requests: int, concurrency: int, headers: dict[str, str]) -> float:
    """Send ``requests`` POSTs to the app in this process, ``concurrency`` at a time; returns the seconds."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        return await post_many(client, path, requests, concurrency, headers)


async def settled(runtime: Runtime, interval: float) -> None:
    # Polling two counters costs nothing next to what is measured, and adds at most ``interval``.
    while runtime.bus.pending + runtime.relay.backlog:  # noqa: ASYNC110
        await asyncio.sleep(interval)


async def one_round(args: argparse.Namespace, directory: Path, number: int) -> dict[str, float]:
    # The floor.
    floor, dispose = await floor_app(database(args.database, directory, f"floor{number}"), args.floor_engine)
    floor_seconds = await drive(floor, "/rows", args.requests, args.concurrency, {})
    await dispose()

    # Ours, with the listener's commits timed through the bus's own signals.
    settings = Settings(
        database=DatabaseSettings(database(args.database, directory, f"ours{number}")),
        bus=BusSettings(args.bus),
        auth=AuthSettings(jwt_secret="benchmark-secret-of-decent-length", generated_secret=False),
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    latencies: list[float] = []

    def finished(_: object, delivery: Delivery, verdict: Verdict) -> None:
        if verdict.ack and delivery.group == "orders-service":
            latencies.append((utcnow() - delivery.message.occurred_at).total_seconds() * 1000)

    signals.delivery_finished.connect(finished, sender=runtime.bus)
    await runtime.start()
    token = Tokens(settings.auth.jwt_secret).issue(CurrentUser(str(uuid.uuid4()), "bench@example.com"))
    # Unloaded: one create at a time, each settled before the next, so the latency is the
    # event's own cost and not time spent queueing behind others.
    for _ in range(args.idle_requests):
        await drive(app, "/api/tickets", 1, 1, {"Authorization": f"Bearer {token}"})
        await settled(runtime, 0.0002)
    idle = sorted(latencies)
    latencies.clear()
    # Steady load below saturation: creates sent at a fixed rate, whatever the responses do.
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        begin = time.perf_counter()

        async def paced(n: int) -> None:
            await asyncio.sleep(max(0.0, begin + n / args.rate - time.perf_counter()))
            response = await client.post("/api/tickets", json={"title": f"paced {n}", "price": 5}, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(response.text)

        await asyncio.gather(*(paced(n) for n in range(args.rate_requests)))
    await settled(runtime, 0.001)
    steady = sorted(latencies)
    latencies.clear()
    started = time.perf_counter()
    ours_seconds = await drive(
        app, "/api/tickets", args.requests, args.concurrency, {"Authorization": f"Bearer {token}"}
    )
    await settled(runtime, 0.001)
    settled_seconds = time.perf_counter() - started
    await runtime.stop()
    signals.delivery_finished.disconnect(finished, sender=runtime.bus)
    if (len(latencies), len(idle), len(steady)) != (args.requests, args.idle_requests, args.rate_requests):
        raise RuntimeError(f"expected {args.requests} replica updates, saw {len(latencies)}")

    latencies.sort()
    return {
        "floor": args.requests / floor_seconds,
        "ours": args.requests / ours_seconds,
        "settled": args.requests / settled_seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "steady_p50": steady[len(steady) // 2],
        "steady_p99": steady[int(len(steady) * 0.99) - 1],
        "idle_p50": idle[len(idle) // 2],
        "idle_p99": idle[int(len(idle) * 0.99) - 1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, "app")
    parser.add_argument("--idle-requests", type=int, default=200, help="creates sent one at a time first")
    parser.add_argument("--rate", type=int, default=100, help="creates/s for the steady-load phase")
    parser.add_argument("--rate-requests", type=int, default=500, help="creates in the steady-load phase")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # per-event log lines would measure the terminal, not the app

    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        for number in range(args.rounds):
            figures = await one_round(args, Path(directory), number)
            rounds.append(figures)
            print(
                f"round {number + 1}/{args.rounds}: floor {figures['floor']:7.0f}/s  ours {figures['ours']:7.0f}/s "
                f"(ratio {figures['ours'] / figures['floor']:.2f})  settled {figures['settled']:7.0f}/s  "
                f"propagation p50: idle {figures['idle_p50']:.2f} ms, at {args.rate}/s {figures['steady_p50']:.2f} ms, "
                f"saturated {figures['p50']:.0f} ms",
                flush=True,
            )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ratios = statistics.median(r["ours"] / r["floor"] for r in rounds)
    settled = statistics.median(r["settled"] / r["floor"] for r in rounds)
    print(
        f"\nmedian of {args.rounds} rounds, {args.requests} creates at concurrency {args.concurrency} "
        f"on {args.database}, bus {args.bus}, floor engine {args.floor_engine}:\n"
        f"  floor (one insert per request) {median('floor'):7.0f} creates/s\n"
        f"  ours over HTTP                 {median('ours'):7.0f} creates/s   ratio to floor {ratios:.2f}\n"
        f"  ours with replicas written     {median('settled'):7.0f} creates/s   ratio to floor {settled:.2f}\n"
        f"  propagation commit -> replica, one create at a time: p50 {median('idle_p50'):.2f} ms  "
        f"p99 {median('idle_p99'):.2f} ms\n"
        f"  propagation commit -> replica, at a steady {args.rate} creates/s: p50 {median('steady_p50'):.2f} ms  "
        f"p99 {median('steady_p99'):.2f} ms\n"
        f"  propagation commit -> replica, saturated as above:    p50 {median('p50'):.1f} ms  "
        f"p99 {median('p99'):.1f} ms (queueing: every part runs flat out)"
    )


if __name__ == "__main__":
    asyncio.run(main())
