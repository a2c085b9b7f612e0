"""The in-memory bus keeps its dead letters in the database, so that a process that dies keeps them too."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Delivery, DeliveryPolicy
from app.bus.deadletters import SqlDeadLetters
from app.bus.memory import MemoryBus
from app.waiting import eventually
from tests.bus.test_contract import Versions, message, versions

FAILING_FAST = DeliveryPolicy(max_deliver=2, backoff=0.001, backoff_max=0.002, max_wait=0.2)


async def broken(delivery: Delivery) -> None:
    raise RuntimeError("a bug in the listener")


def bus_on(sessions: async_sessionmaker[AsyncSession]) -> MemoryBus:
    """A bus as one run of the app has it: a new one per run, the same database across runs."""
    return MemoryBus(FAILING_FAST, dead_letters=SqlDeadLetters(sessions))


async def test_dead_letters_outlive_the_bus_that_made_them(sessions: async_sessionmaker[AsyncSession]) -> None:
    first = bus_on(sessions)
    await first.subscribe("ticket:updated", "orders-service", broken)
    sent = message("ticket:updated", '{"id": "t"}')
    await first.publish([sent])
    await eventually(lambda: first.pending == 0)
    [dead] = await first.dead_letters()
    # The process is gone without a goodbye: nothing of the first bus is closed or flushed.

    again = bus_on(sessions)
    [kept] = await again.dead_letters()
    assert kept == dead
    assert (kept.message, kept.group, kept.attempts) == (sent, "orders-service", 2)
    assert "a bug in the listener" in kept.error
    await again.close()


async def test_one_death_per_message_and_group_however_often_it_dies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = bus_on(sessions)
    await bus.subscribe("ticket:updated", "orders-service", broken)
    await bus.subscribe("ticket:updated", "auditors", broken)
    sent = message("ticket:updated", "x")
    await bus.publish([sent])
    await eventually(lambda: bus.pending == 0)
    assert sorted(dead.group for dead in await bus.dead_letters()) == ["auditors", "orders-service"]
    # Published again (an outbox row sent twice) and dead again: still one dead letter per group.
    await bus.publish([sent])
    await eventually(lambda: bus.pending == 0)
    assert sorted(dead.group for dead in await bus.dead_letters()) == ["auditors", "orders-service"]
    await bus.close()


async def test_a_replay_cut_short_by_a_crash_starts_again_when_its_group_subscribes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    record = f"r{uuid.uuid4().hex[:6]}"
    first = bus_on(sessions)
    handler = Versions()
    await first.subscribe("ticket:updated", "orders-service", handler)
    # Version 2 waits for a version 1 that never comes, and dies of waiting.
    await first.publish(versions("ticket:updated", record, 2))
    [dead] = await eventually(first.dead_letters, what="the dead letter")
    assert dead.key == record
    await first.stop_consuming()  # no worker left to take the replay: the process dies before it runs
    assert await first.replay(dead.id) == [dead.id]
    assert await first.dead_letters() == [], "being replayed, it is no longer listed"

    again = bus_on(sessions)
    handler.applied[record] = 1  # meanwhile version 1 has arrived
    await again.subscribe("ticket:updated", "orders-service", handler)
    await eventually(lambda: handler.applied[record] == 2 and again.pending == 0, what="the replay, resumed")
    assert await again.dead_letters() == []
    assert await bus_on(sessions).dead_letters() == [], "forgotten once its replay settled"
    await again.close()


@pytest.mark.parametrize("unknown", ["no-such-id", str(uuid.uuid4())], ids=["no-such-id", "an-unknown-uuid"])
async def test_replaying_what_is_not_a_dead_letter_replays_nothing(
    sessions: async_sessionmaker[AsyncSession], unknown: str
) -> None:
    bus = bus_on(sessions)
    assert await bus.replay(unknown) == []
    await bus.close()
