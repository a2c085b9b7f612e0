"""The NATS bus on a three-node cluster with replicated streams: a node dies, nothing is lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import nats
import pytest

from app import db
from app.bus import Delivery, DeliveryPolicy
from app.bus.nats import NatsBus, NatsOptions, durable_name
from app.bus.outbox import OutboxBase
from app.bus.relay import Relay
from app.waiting import eventually
from tests.bus.test_contract import message, unique
from tests.nats_server import NatsCluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]


@pytest.fixture
async def buses(nats_cluster: NatsCluster) -> AsyncIterator[list[NatsBus]]:
    made: list[NatsBus] = []

    async def connect() -> NatsBus:
        options = NatsOptions.from_url(nats_cluster.url, stream="CLUSTERED", replicas=3, ack_wait=1.0)
        bus = NatsBus(options, DeliveryPolicy())
        await bus.connect()
        made.append(bus)
        return bus

    yield [await connect(), await connect()]
    for bus in made:
        await bus.close()


async def test_streams_and_their_dead_letters_are_kept_on_every_node(
    nats_cluster: NatsCluster, buses: list[NatsBus]
) -> None:
    connection = await nats.connect(nats_cluster.nodes[0].url)
    try:
        js = connection.jetstream()
        for stream in ("CLUSTERED", "CLUSTERED_DEAD"):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # the leader, and two others
    finally:
        await connection.close()
    assert buses[0].describe().endswith("(JetStream, stream CLUSTERED, 3 replicas)")


async def stream_leader(cluster: NatsCluster) -> str:
    connection = await nats.connect(cluster.nodes[0].url)
    try:
        info = await connection.jetstream().stream_info("CLUSTERED")
    finally:
        await connection.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return info.cluster.leader


@pytest.mark.parametrize("victim", ["the consumer's node", "the stream's leader"])
async def test_nothing_is_lost_when_a_node_dies(
    nats_cluster: NatsCluster, buses: list[NatsBus], sqlite_url: str, victim: str
) -> None:
    consumer, publisher = buses
    subject = unique("failover")
    handled: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        handled[delivery.message.id] += 1

    await consumer.subscribe(subject, "g", handler)
    engine = db.create_engine(sqlite_url)
    async with engine.begin() as connection:
        await connection.run_sync(OutboxBase.metadata.create_all)
    relay = Relay(db.create_sessionmaker(engine), publisher, retry_delay=0.05)
    await relay.start()
    sent = [message(subject, str(n)) for n in range(300)]
    try:
        relay.enqueue(sent[:100])
        await eventually(lambda: len(handled) >= 30, what="consumption under way")
        # A node dies (SIGKILL): whoever talked to it finds another, the stream a new leader.
        if victim == "the stream's leader":
            name = await stream_leader(nats_cluster)
            dead = nats_cluster.nodes[int(name.removeprefix("n"))]
        else:
            dead = next(node for node in nats_cluster.nodes if f"127.0.0.1:{node.port}" == consumer.connected_to)
        await asyncio.to_thread(dead.kill)
        relay.enqueue(sent[100:200])
        await eventually(lambda: consumer.connected_to not in (None, f"127.0.0.1:{dead.port}"), timeout=20)
        relay.enqueue(sent[200:])
        assert await relay.flush(timeout=30)
        await eventually(lambda: set(handled) == {m.id for m in sent}, timeout=30, what="every message handled")
        await asyncio.to_thread(dead.start)  # back, and catching up from the others
    finally:
        await relay.close()
        await engine.dispose()
    await eventually(lambda: consumer.pending == 0 and publisher.pending == 0, timeout=20)
    assert await consumer.dead_letters() == []
    state = await eventually(lambda: _settled_on_the_server(nats_cluster, subject), timeout=20)
    assert state == (0, 0)
    assert max(handled.values()) <= 2, "a redelivery at most, for what the dead node held"


async def _settled_on_the_server(cluster: NatsCluster, subject: str) -> tuple[int, int] | None:
    alive = next(node for node in cluster.nodes if node.running)
    connection = await nats.connect(alive.url)
    try:
        info = await connection.jetstream().consumer_info("CLUSTERED", durable_name(subject, "g"))
    finally:
        await connection.close()
    state = (info.num_pending or 0, info.num_ack_pending or 0)
    return state if state == (0, 0) else None
