"""What only a broker outside the process has to survive or show.

Its restart, a member's death, deliveries that never got an answer, many processes starting at
once; and what the NATS layout must keep apart: replays from other groups, retried publishes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from app import db
from app.bus import Bus, Delivery, DeliveryPolicy, Handler, Outcome
from app.bus.nats import durable_name
from app.bus.outbox import OutboxBase
from app.bus.relay import Relay
from app.waiting import eventually
from tests.bus.conftest import FAST, NatsHarness
from tests.bus.test_contract import Versions, message, unique
from tests.nats_server import NatsServer

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]


async def consumer_state(server: NatsServer, stream: str, consumer: str) -> tuple[int, int]:
    """(messages not yet delivered, deliveries not yet acknowledged), as the server sees them."""
    connection = await nats.connect(server.url)
    try:
        info = await connection.jetstream().consumer_info(stream, consumer)
        return info.num_pending or 0, info.num_ack_pending or 0
    finally:
        await connection.close()


async def is_down(bus: Bus) -> bool:
    return not await bus.ping()


def relay_failed(caplog: pytest.LogCaptureFixture) -> bool:
    return any(record.getMessage().startswith("[outbox] Publishing") for record in caplog.records)


@pytest.fixture
async def restartable(own_nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
    # Short ack_wait and publish timeout: what the outage swallowed comes back within a second.
    harness = NatsHarness(DeliveryPolicy(), own_nats_server, ack_wait=1.0, publish_timeout=1.0)
    yield harness
    await harness.aclose()


@pytest.fixture
async def nats_harness(nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
    harness = NatsHarness(FAST, nats_server, ack_wait=1.0)
    yield harness
    await harness.aclose()


async def test_nothing_is_lost_when_the_server_restarts_mid_stream(
    restartable: NatsHarness, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ticketing.outbox")
    server = restartable.server
    subject = unique("restart")
    handled: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        handled[delivery.message.id] += 1

    consumer = await restartable.connect()
    await consumer.subscribe(subject, "g", handler)
    publisher = await restartable.connect()
    # The outbox's relay publishes; when publishing fails it publishes the same batch again,
    # which the event ids (Nats-Msg-Id) make harmless.
    engine = db.create_engine(sqlite_url)
    async with engine.begin() as connection:
        await connection.run_sync(OutboxBase.metadata.create_all)
    relay = Relay(db.create_sessionmaker(engine), publisher, retry_delay=0.05)
    await relay.start()
    sent = [message(subject, str(n)) for n in range(300)]
    try:
        for start in range(0, 100, 10):
            relay.enqueue(sent[start : start + 10])
        await eventually(lambda: len(handled) >= 30, what="consumption under way")

        # Stopped while messages are being published and handled; same port, same store.
        await asyncio.to_thread(server.stop)
        for start in range(100, 200, 10):
            relay.enqueue(sent[start : start + 10])
        await eventually(lambda: is_down(publisher), what="the outage noticed")
        # Down for longer than a publish may take: the relay sees publishes fail and retries them.
        await eventually(lambda: relay_failed(caplog), timeout=10, what="a failed publish")
        await asyncio.to_thread(server.start)
        for start in range(200, 300, 10):
            relay.enqueue(sent[start : start + 10])

        assert await relay.flush(timeout=30), "every batch published in the end"
        await eventually(lambda: set(handled) == {m.id for m in sent}, timeout=30, what="every message handled")
    finally:
        await relay.close()
        await engine.dispose()

    async def all_acked() -> bool:
        return await consumer_state(server, restartable.stream, durable_name(subject, "g")) == (0, 0)

    # Nothing left undelivered or unacknowledged on the server's side either.
    await eventually(all_acked, timeout=15, what="every published message acked")
    await eventually(lambda: consumer.pending == 0 and publisher.pending == 0)
    assert await consumer.dead_letters() == []


# A member in a process of its own, which the test kills while it handles a message.
MEMBER = textwrap.dedent(
    """
    import asyncio, sys
    from app.bus.nats import NatsBus, NatsOptions

    async def main(url: str, stream: str, subject: str) -> None:
        bus = NatsBus(NatsOptions.from_url(url, stream=stream, ack_wait=1.0))
        await bus.connect()

        async def handler(delivery):
            print("handling", delivery.message.id, delivery.attempt, flush=True)
            await asyncio.Event().wait()  # never returns: the process dies in here

        await bus.subscribe(subject, "workers", handler)
        print("subscribed", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def read_line(stream: asyncio.StreamReader, timeout: float = 15.0) -> str:
    return (await asyncio.wait_for(stream.readline(), timeout)).decode().strip()


async def test_a_message_whose_member_dies_mid_handling_goes_to_another_member(nats_harness: NatsHarness) -> None:
    subject = unique("victim")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MEMBER, nats_harness.server.url, nats_harness.stream, subject,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert await read_line(child.stdout) == "subscribed"
        publisher = await nats_harness.connect()
        sent = message(subject, "important")
        await publisher.publish([sent])
        assert await read_line(child.stdout) == f"handling {sent.id} 1"

        got: list[Delivery] = []

        async def survivor(delivery: Delivery) -> None:
            got.append(delivery)

        await (await nats_harness.connect()).subscribe(subject, "workers", survivor)
        assert got == [], "the message is the dying member's until its ack_wait runs out"
        child.kill()  # SIGKILL: no ack, no nak, no goodbye
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    # Once its ack_wait runs out, the server gives it to the member still alive.
    await eventually(lambda: got, timeout=10, what="the redelivery")
    [delivery] = got
    assert (delivery.message.id, delivery.message.data, delivery.attempt) == (sent.id, b"important", 2)


async def test_streams_and_consumers_are_created_once_however_many_processes_start_together(
    nats_harness: NatsHarness,
) -> None:
    subject = unique("crowd")
    handled: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        handled[delivery.message.id] += 1

    # Four processes start at the same moment, each making sure the streams and the group exist.
    buses = await asyncio.gather(*(nats_harness.connect() for _ in range(4)))
    await asyncio.gather(*(bus.subscribe(subject, "g", handler) for bus in buses))

    connection = await nats.connect(nats_harness.server.url)
    try:
        js = connection.jetstream()
        consumers = {info.name: info.created for info in await js.consumers_info(nats_harness.stream)}
        group = durable_name(subject, "g")
        assert set(consumers) == {group, f"{group}-replay"}

        sent = [message(subject, str(n)) for n in range(20)]
        await buses[0].publish(sent)
        await eventually(lambda: len(handled) == 20)

        # A restarted process finds everything there, and its group resumes.
        await buses[1].close()
        again = await nats_harness.connect()
        await again.subscribe(subject, "g", handler)
        more = [message(subject, f"more-{n}") for n in range(20)]
        await again.publish(more)
        await eventually(lambda: len(handled) == 40)
        assert {info.name: info.created for info in await js.consumers_info(nats_harness.stream)} == consumers
        streams = [info.config.name for info in await js.streams_info()]
        assert streams.count(nats_harness.stream) == streams.count(f"{nats_harness.stream}_DEAD") == 1
    finally:
        await connection.close()
    assert set(handled.values()) == {1}, "each message handled once by the group"


async def test_a_message_delivered_too_often_without_an_answer_is_dead_lettered_not_handled(
    nats_harness: NatsHarness,
) -> None:
    subject = unique("exhausted")
    handled: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery)

    bus = await nats_harness.connect()
    await bus.subscribe(subject, "g", handler)
    await bus.close()  # the group exists; its members are gone
    publisher = await nats_harness.connect()
    sent = message(subject, "cursed")
    await publisher.publish([sent])

    # Members that took it and died before answering, as many times as the policy allows.
    connection = await nats.connect(nats_harness.server.url)
    try:
        pull = await connection.jetstream().pull_subscribe_bind(durable_name(subject, "g"), stream=nats_harness.stream)
        for attempt in range(1, FAST.max_deliver + 1):
            [msg] = await pull.fetch(1, timeout=5)
            assert msg.metadata.num_delivered == attempt
            await msg.nak()
    finally:
        await connection.close()

    again = await nats_harness.connect()
    await again.subscribe(subject, "g", handler)
    dead = await eventually(again.dead_letters, what="the dead letter")
    assert handled == []
    [letter] = dead
    assert (letter.message.id, letter.group, letter.attempts) == (sent.id, "g", FAST.max_deliver + 1)
    assert "without an answer" in letter.error
    await eventually(lambda: again.pending == 0)


async def test_a_replay_goes_to_the_dead_letters_group_only(nats_harness: NatsHarness) -> None:
    subject = unique("replay")
    seen: dict[str, list[int]] = {"picky": [], "easy": []}
    cured = False

    async def picky(delivery: Delivery) -> None:
        seen["picky"].append(delivery.attempt)
        if not cured:
            raise ValueError("not today")

    async def easy(delivery: Delivery) -> None:
        seen["easy"].append(delivery.attempt)

    bus = await nats_harness.connect()
    await bus.subscribe(subject, "picky", picky)
    await bus.subscribe(subject, "easy", easy)
    await bus.publish([message(subject, "x")])
    [dead] = await eventually(bus.dead_letters, what="the dead letter")
    assert seen == {"picky": list(range(1, FAST.max_deliver + 1)), "easy": [1]}

    cured = True
    assert await bus.replay(dead.id)
    await eventually(lambda: len(seen["picky"]) == FAST.max_deliver + 1)
    await eventually(lambda: bus.pending == 0)
    # Afresh for its group (attempt 1), and nothing for the group that had handled it.
    assert seen == {"picky": [*range(1, FAST.max_deliver + 1), 1], "easy": [1]}


async def test_publishing_the_same_event_again_delivers_it_once(nats_harness: NatsHarness) -> None:
    subject = unique("dedup")
    handled: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        handled[delivery.message.id] += 1

    bus = await nats_harness.connect()
    await bus.subscribe(subject, "g", handler)
    batch = [message(subject, str(n)) for n in range(5)]
    # As the relay does after a publish whose acks were lost: the whole batch once more.
    await bus.publish(batch)
    await bus.publish(batch)
    marker = message(subject, "after")
    await bus.publish([marker])
    await eventually(lambda: marker.id in handled)
    await eventually(lambda: bus.pending == 0)
    assert handled == Counter({m.id: 1 for m in [*batch, marker]})


async def test_an_early_message_stays_with_its_member_past_ack_wait_and_is_never_redelivered(
    nats_harness: NatsHarness,
) -> None:
    subject = unique("patient")
    versions = Versions()
    seen: list[tuple[str, int, int]] = []  # (member, version, attempt)

    def member(name: str) -> Handler:
        async def handle(delivery: Delivery) -> Outcome:
            seen.append((name, int(delivery.message.data.decode().partition(":")[2]), delivery.attempt))
            return await versions(delivery)

        return handle

    for name in ("a", "b"):
        await (await nats_harness.connect()).subscribe(subject, "g", member(name))
    publisher = await nats_harness.connect()
    await publisher.publish([message(subject, "r:2")])
    await eventually(lambda: seen, what="version 2 refused")
    # The scenario itself: three times ack_wait pass while version 2 waits for version 1.
    await asyncio.sleep(3 * nats_harness.options["ack_wait"])
    await publisher.publish([message(subject, "r:1")])
    await eventually(lambda: versions.applied == {"r": 2}, what="both applied")

    holders = {name for name, version, _ in seen if version == 2}
    assert len(holders) == 1, f"version 2 went to {holders}: its member lost it to ack_wait"
    attempts = [attempt for _, version, attempt in seen if version == 2]
    assert attempts == list(range(1, len(attempts) + 1)), "each refusal ran it again, here, counting on"
    assert len(attempts) > FAST.max_deliver, "refused more often than a failure may be, and never dead-lettered"
    state = await consumer_state(nats_harness.server, nats_harness.stream, durable_name(subject, "g"))
    assert state == (0, 0)
    assert await publisher.dead_letters() == []
