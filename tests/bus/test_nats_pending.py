"""What the NATS bus keeps track of on the server: what waits for this process, and for how long."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import nats
import pytest

from app.bus import Delivery
from app.waiting import eventually
from tests.bus.conftest import FAST, NatsHarness
from tests.bus.test_contract import message, unique
from tests.nats_server import NatsServer

pytestmark = pytest.mark.nats


@pytest.fixture
async def harness(nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
    harness = NatsHarness(FAST, nats_server)
    yield harness
    await harness.aclose()


async def test_messages_published_elsewhere_count_until_this_process_settles_them(harness: NatsHarness) -> None:
    subject = unique("elsewhere")
    release = asyncio.Event()
    handled: list[bytes] = []

    async def slow(delivery: Delivery) -> None:
        await release.wait()
        handled.append(delivery.message.data)

    publisher, consumer = await harness.connect(), await harness.connect()
    await consumer.subscribe(subject, "g", slow)
    await publisher.publish([message(subject, str(n)) for n in range(3)])

    # The publisher has no group for it: settled on its side once NATS has it.
    assert await publisher.count_pending() == 0
    # The consumer holds one and two wait on the server: all three are its to settle.
    assert await eventually(consumer.count_pending, what="the consumer to count them") == 3
    release.set()
    await eventually(lambda: len(handled) == 3)

    async def settled() -> bool:
        return await consumer.count_pending() == 0

    await eventually(settled, what="pending back to 0")


async def test_max_age_bounds_the_history_the_stream_keeps(nats_server: NatsServer) -> None:
    harness = NatsHarness(FAST, nats_server, max_age=3600)
    try:
        bus = await harness.connect()
        await bus.subscribe(unique("aged"), "g", _ignore)
        connection = await nats.connect(nats_server.url)
        try:
            info = await connection.jetstream().stream_info(harness.stream)
        finally:
            await connection.close()
    finally:
        await harness.aclose()
    assert info.config.max_age == 3600


async def test_a_new_group_is_warned_that_expired_history_will_not_reach_it(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    harness = NatsHarness(FAST, nats_server, max_age=1)
    subject = unique("expiring")
    handled: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.message.data)

    try:
        bus = await harness.connect()
        await bus.subscribe(subject, "early", handler)
        await bus.publish([message(subject, "old")])
        await eventually(lambda: handled == [b"old"])
        connection = await nats.connect(nats_server.url)
        try:
            js = connection.jetstream()

            async def expired() -> bool:
                info = await js.stream_info(harness.stream)
                return (info.state.messages or 0) == 0

            await eventually(expired, timeout=10, interval=0.05, what="the server to expire the first event")
        finally:
            await connection.close()
        with caplog.at_level(logging.WARNING, logger="ticketing.bus"):
            await bus.subscribe(subject, "late", handler)
            # The group that was there from the start is not new: it is not warned about.
            await bus.subscribe(subject, "early", handler)
        await bus.publish([message(subject, "new")])
        await eventually(lambda: handled.count(b"new") == 2)
    finally:
        await harness.aclose()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"[bus] Group late is new on {subject}, and stream {harness.stream} keeps 1s of history: older events "
        "(1 expired from the stream so far) will not be delivered to it"
    ]
    assert handled.count(b"old") == 1


async def _ignore(delivery: Delivery) -> None:
    return None
