"""The NATS bus against raw nats-py JetStream, in one run, on one nats-server of its own.

Raw:  publish with ``Nats-Msg-Id`` through ``publish_async`` in batches, awaiting each batch's
      acks; consume with a durable pull consumer (``pull_subscribe`` + ``fetch``), explicit ack,
      messages handled one after the other.
Ours: ``NatsBus.publish`` of the same batches -> a no-op handler -> ack, on another connection.

Publisher and consumer run at the same time, each on its own connection, each round on a fresh
stream. Printed per round, then the medians:

- flat out: throughput (messages/s, first publish to last handled) and ours/raw; latency there
  is mostly the backlog of a publisher faster than its consumer;
- paced (``--paced`` messages/s, in batches of 10): latency publish -> handled, p50 and p99,
  of a system that keeps up.

Run: ``python benchmarks/nats_bus.py [--messages N] [--batch B] [--rounds R] [--paced RATE] [--uvloop]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.bus import Delivery, Message
from app.bus.nats import NatsBus, NatsOptions
from app.clock import utcnow
from tests.nats_server import running_server

# About the size of a ticket:updated event.
PAYLOAD = (
    b'{"id":"6f1c2a4e-0b7d-4c1e-9a55-2f0e8d7c1b3a","version":3,"title":"concert",'
    b'"price":20.5,"userId":"0d9b6c2e-41a7-4f4e-8e0a-7c3b5d1e9f20","orderId":null}'
)
# nats-py's fetch waits for a whole batch until its timeout once the stream is drained:
# short, so that raw is not held back by the idiom rather than by the server.
FETCH_TIMEOUT = 0.05


@dataclass
class Result:
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: int) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, len(ordered) * q // 100)] * 1000


class Pacer:
    """Spaces batches evenly at ``rate`` messages/s (none: as fast as acks come back)."""

    def __init__(self, rate: float | None, batch: int) -> None:
        self.gap = batch / rate if rate else 0.0
        self.next_at = time.perf_counter()

    async def wait(self) -> None:
        if self.gap:
            self.next_at += self.gap
            await asyncio.sleep(max(0.0, self.next_at - time.perf_counter()))


async def raw_round(url: str, count: int, batch: int, pull: int, rate: float | None = None) -> Result:
    stream = f"RAW{uuid.uuid4().hex[:8].upper()}"
    subject = f"{stream.lower()}.events.ticket:updated"
    publisher, consumer = await nats.connect(url), await nats.connect(url)
    js, cjs = publisher.jetstream(), consumer.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.events.>"], storage=api.StorageType.FILE)
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1)
    sub = await cjs.pull_subscribe(subject, durable="bench", stream=stream, config=config)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            try:
                msgs = await sub.fetch(pull, timeout=FETCH_TIMEOUT)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                latencies.append(time.perf_counter() - sent_at[(msg.headers or {})["Nats-Msg-Id"]])
                await msg.ack()

    async def produce() -> None:
        pacer = Pacer(rate, batch)
        for start in range(0, count, batch):
            await pacer.wait()
            chunk = ids[start : start + batch]
            now = time.perf_counter()
            futures = []
            for message_id in chunk:
                sent_at[message_id] = now
                futures.append(await js.publish_async(subject, PAYLOAD, headers={"Nats-Msg-Id": message_id}))
            await asyncio.gather(*futures)

    began = time.perf_counter()
    await asyncio.gather(consume(), produce())
    seconds = time.perf_counter() - began
    await js.delete_stream(stream)
    await publisher.close()
    await consumer.close()
    return Result(seconds, latencies)


async def ours_round(url: str, count: int, batch: int, pull: int, rate: float | None = None) -> Result:
    stream = f"OURS{uuid.uuid4().hex[:8].upper()}"
    publisher = NatsBus(NatsOptions.from_url(url, stream=stream, batch=pull))
    consumer = NatsBus(NatsOptions.from_url(url, stream=stream, batch=pull))
    await publisher.connect()
    await consumer.connect()
    messages = [
        Message(id=str(uuid.uuid4()), subject="ticket:updated", data=PAYLOAD, occurred_at=utcnow(), source="bench")
        for _ in range(count)
    ]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        latencies.append(time.perf_counter() - sent_at[delivery.message.id])
        if len(latencies) == count:
            done.set()

    await consumer.subscribe("ticket:updated", "bench", handler)

    async def produce() -> None:
        pacer = Pacer(rate, batch)
        for start in range(0, count, batch):
            await pacer.wait()
            chunk = messages[start : start + batch]
            now = time.perf_counter()
            for message in chunk:
                sent_at[message.id] = now
            await publisher.publish(chunk)

    began = time.perf_counter()
    await asyncio.gather(done.wait(), produce())
    seconds = time.perf_counter() - began
    await consumer.close()
    await publisher.close()
    cleanup = await nats.connect(url)
    for name in (stream, f"{stream}_DEAD"):
        await cleanup.jetstream().delete_stream(name)
    await cleanup.close()
    return Result(seconds, latencies)


def line(name: str, result: Result) -> str:
    return (
        f"{name:>4}: {result.rate:9,.0f} msg/s  p50 {result.percentile(50):7.2f} ms"
        f"  p99 {result.percentile(99):7.2f} ms  ({len(result.latencies)} in {result.seconds:.2f}s)"
    )


Round = Callable[[str, int, int, int, float | None], Awaitable[Result]]
IMPLEMENTATIONS: list[tuple[str, Round]] = [("raw", raw_round), ("ours", ours_round)]


async def measure(url: str, args: argparse.Namespace, paced: bool) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {"raw": [], "ours": []}
    count, batch, rate = (args.paced * 2, 10, args.paced) if paced else (args.messages, args.batch, None)
    for number in range(1, args.rounds + 1):
        print(f"{'paced' if paced else 'flat out'}, round {number}/{args.rounds}")
        # Alternate which goes first, so that neither always runs on a warmer machine.
        for name, run in IMPLEMENTATIONS if number % 2 else IMPLEMENTATIONS[::-1]:
            result = await run(url, count, batch, args.pull, rate)
            runs[name].append(result)
            print("  " + line(name, result), flush=True)
    return runs


def summary(runs: dict[str, list[Result]]) -> None:
    for name, results in runs.items():
        print(
            f"  {name:>4}: {statistics.median(r.rate for r in results):9,.0f} msg/s"
            f"  p50 {statistics.median(r.percentile(50) for r in results):7.2f} ms"
            f"  p99 {statistics.median(r.percentile(99) for r in results):7.2f} ms"
        )


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    with running_server() as server:
        print(f"nats-server {server.binary} on {server.url}; {args.messages} messages, batches of {args.batch}")
        # A warm-up of each, not counted: the first round pays for imports and the store's files.
        for _, run in IMPLEMENTATIONS:
            await run(server.url, min(args.messages, 2000), args.batch, args.pull, None)
        flat = await measure(server.url, args, paced=False)
        paced = await measure(server.url, args, paced=True) if args.paced else {}
    print(f"medians over {args.rounds} rounds, flat out ({args.messages} messages, batches of {args.batch}):")
    summary(flat)
    raw_rate = statistics.median(r.rate for r in flat["raw"])
    ours_rate = statistics.median(r.rate for r in flat["ours"])
    print(f"  ours/raw throughput: {ours_rate / raw_rate:.0%} (target: at or above raw, 100%)")
    if paced:
        print(f"medians over {args.rounds} rounds, paced at {args.paced:,} msg/s in batches of 10:")
        summary(paced)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round")
    parser.add_argument("--batch", type=int, default=100, help="messages per publish call")
    parser.add_argument("--pull", type=int, default=128, help="messages a consumer pulls at a time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paced", type=int, default=2000, help="messages/s for the latency rounds (0: none)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the app does under uvicorn")
    arguments = parser.parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(arguments))
