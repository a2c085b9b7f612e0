"""Memory after many events, and an order rush, in one process with the in-memory bus.

1. Peak RSS: the whole app in this process (``create_app``, SQLite file, in-memory bus). The
   tickets module's session writes ``--events`` tickets with their ``ticket:created`` events,
   ``--batch`` per transaction, through the outbox; the relay publishes them, the orders
   module's listener copies each ticket. Printed: resident memory at start (after a warm-up of
   one batch), its peak (``VmHWM``) and its end, and events/s. Anything the bus, the relay or a
   listener kept per event (a set of ids, a parked delivery, a signal receiver) shows as growth.
2. Order rush: ``--buyers`` users order one ticket at the same moment over HTTP (in this
   process, httpx's ASGI transport). Exactly one gets 201; the rest 409. Printed: the time until
   every answer is in and until the ticket shows its one order (``orderId``), and the answers.

Run: ``python benchmarks/memory.py [--events N] [--batch B] [--buyers N]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx

from app.common.auth import CurrentUser, Tokens
from app.common.ids import new_id
from app.main import create_app
from app.runtime import Runtime
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from app.tickets.events import stage_ticket_created
from app.tickets.models import Ticket
from app.waiting import eventually

SECRET = "benchmark-secret-of-decent-length"


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its peak so far (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the peak, in any case


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


async def write_tickets(runtime: Runtime, count: int, batch: int, owner: str) -> None:
    for start in range(0, count, batch):
        async with runtime.sessionmaker() as session:
            for n in range(start, min(count, start + batch)):
                ticket = Ticket(id=new_id(), title=f"show {n}", price=Decimal(10 + n % 90), user_id=owner)
                session.add(ticket)
                stage_ticket_created(session, ticket)
            await session.commit()
        # Settle as it goes: the figure is what a long run keeps, not an unbounded queue.
        while runtime.relay.backlog or runtime.bus.pending > 4 * batch:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def settled(runtime: Runtime) -> bool:
    return await runtime.bus.count_pending() + runtime.relay.backlog == 0


async def peak_rss(directory: Path, events: int, batch: int) -> None:
    settings = Settings(
        database=DatabaseSettings(f"sqlite+aiosqlite:///{directory / 'memory.db'}"),
        bus=BusSettings("memory://"),
        auth=AuthSettings(jwt_secret=SECRET, generated_secret=False),
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    await runtime.start()
    try:
        owner = str(uuid.uuid4())
        await write_tickets(runtime, batch, batch, owner)  # warm-up: caches, pools, compiled statements
        await eventually(lambda: settled(runtime), timeout=60, what="the warm-up settled")
        reset_peak()
        start = rss_mb()
        began = time.perf_counter()
        await write_tickets(runtime, events, batch, owner)
        await eventually(lambda: settled(runtime), timeout=600, interval=0.01, what="every event settled")
        seconds = time.perf_counter() - began
        peak, end = rss_mb("VmHWM"), rss_mb()
        stats = runtime.bus.stats
    finally:
        await runtime.stop()
    print(
        f"{events} ticket:created events through outbox, relay, in-memory bus and the orders listener "
        f"({batch} per transaction) in {seconds:.1f} s, {events / seconds:.0f} events/s:\n"
        f"  RSS at start {start:6.1f} MB   peak {peak:6.1f} MB (+{peak - start:.1f})   end {end:6.1f} MB "
        f"(+{end - start:.1f})\n"
        f"  bus: published {stats.published}, acked {stats.acked}, redelivered {stats.redelivered}",
        flush=True,
    )


async def order_rush(directory: Path, buyers: int) -> None:
    settings = Settings(
        database=DatabaseSettings(f"sqlite+aiosqlite:///{directory / 'rush.db'}"),
        bus=BusSettings("memory://"),
        auth=AuthSettings(jwt_secret=SECRET, generated_secret=False),
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    tokens = Tokens(SECRET)

    def headers() -> dict[str, str]:
        user = CurrentUser(str(uuid.uuid4()), "buyer@example.com")
        return {"Authorization": f"Bearer {tokens.issue(user)}"}

    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
            created = await client.post("/api/tickets", json={"title": "the show", "price": 50}, headers=headers())
            ticket_id = created.json()["id"]

            async def copied() -> bool:
                return await settled(runtime)

            await eventually(copied, timeout=10, what="the ticket copied to the orders module")
            everyone = [headers() for _ in range(buyers)]
            began = time.perf_counter()
            answers = await asyncio.gather(
                *(client.post("/api/orders", json={"ticketId": ticket_id}, headers=h) for h in everyone)
            )
            answered = time.perf_counter() - began
            codes = Counter(response.status_code for response in answers)
            winner: str = next(response.json()["id"] for response in answers if response.status_code == 201)

            async def held() -> bool:
                holder: str | None = (await client.get(f"/api/tickets/{ticket_id}")).json()["orderId"]
                return holder == winner

            await eventually(held, timeout=30, interval=0.001, what="the ticket held by the one order")
            reserved = time.perf_counter() - began
    finally:
        await runtime.stop()
    print(
        f"order rush: {buyers} orders for one ticket at once: answers {dict(sorted(codes.items()))}; "
        f"all answered in {answered * 1000:.0f} ms, the ticket held by the winner after {reserved * 1000:.0f} ms",
        flush=True,
    )
    if codes != Counter({201: 1, 409: buyers - 1}):
        raise SystemExit(f"the rush should end with one 201 and {buyers - 1} 409s: {dict(codes)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--buyers", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # per-event log lines would measure the terminal, not the app
    with tempfile.TemporaryDirectory() as folder:
        await peak_rss(Path(folder), args.events, args.batch)
        await order_rush(Path(folder), args.buyers)


if __name__ == "__main__":
    asyncio.run(main())
