"""Several processes, one outbox: each row is relayed by the process that holds it, or, once that has died, by another.

Relays here are what each process would have; a relay that "dies" is one whose tasks stop without
a goodbye (no close, no letting go), as when its process is killed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.bus import Delivery, Message, outbox
from app.bus.memory import MemoryBus
from app.bus.outbox import LEASE, OutboxRecord
from app.bus.relay import Relay
from app.clock import utcnow
from app.waiting import eventually
from tests.bus.test_outbox import Received, engine, unsent, write

__all__ = ["engine"]  # the fixture: a database with the outbox, SQLite and PostgreSQL

# The relays here hold their claims this long (renewing them every 0.1 s), not the production
# LEASE: the same rules, with the waits for a claim to run out five times shorter.
SHORT_LEASE = timedelta(seconds=0.6)


class Unreachable(MemoryBus):
    """A broker this process cannot reach (until ``reach()``): publishing fails, so rows stay unsent."""

    def __init__(self) -> None:
        super().__init__()
        self.reachable = False

    async def publish(self, messages: Sequence[Message]) -> None:
        if not self.reachable:
            raise ConnectionError("broker unreachable from here")
        await super().publish(messages)


@pytest.fixture
async def relays(engine: AsyncEngine) -> AsyncIterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        await relay.close()


async def relay_on(engine: AsyncEngine, bus: MemoryBus, relays: list[Relay]) -> Relay:
    relay = Relay(db.create_sessionmaker(engine), bus, retry_delay=0.05, upkeep_every=0.1, lease=SHORT_LEASE)
    await relay.start()
    relays.append(relay)
    return relay


async def die(relay: Relay) -> None:
    """What a SIGKILL leaves: the relay's loops gone mid-work, its claims as they were."""
    for task in relay._tasks.values():
        task.cancel()
    await asyncio.gather(*relay._tasks.values(), return_exceptions=True)
    relay._tasks.clear()


async def claims(engine: AsyncEngine) -> Counter[str | None]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(OutboxRecord.claimed_by).where(OutboxRecord.published_at.is_(None)))
        return Counter(owner for (owner,) in rows)


async def test_rows_a_live_relay_holds_are_not_taken_by_another(engine: AsyncEngine, relays: list[Relay]) -> None:
    stuck = Unreachable()
    holder = await relay_on(engine, stuck, relays)
    await write(holder.sessions(engine), "a", "b", "c")
    other_bus = MemoryBus()
    await relay_on(engine, other_bus, relays)
    async with engine.connect() as connection:
        first = await connection.scalar(select(func.min(OutboxRecord.claimed_until)))
    assert first is not None

    async def renewed_past_the_first_lease() -> bool:
        async with engine.connect() as connection:
            lowest = await connection.scalar(select(func.min(OutboxRecord.claimed_until)))
        return lowest is not None and lowest > first + SHORT_LEASE

    # Longer than a lease has passed, and the holder has kept renewing: nobody else took them.
    await eventually(renewed_past_the_first_lease, timeout=10, what="the holder to renew its claims twice over")
    assert other_bus.stats.published == 0
    assert await claims(engine) == Counter({holder.owner: 3})
    stuck.reachable = True
    assert await holder.flush(timeout=10)
    assert (stuck.stats.published, await unsent(engine)) == (3, 0)


async def test_the_rows_of_a_relay_that_died_go_out_through_another(engine: AsyncEngine, relays: list[Relay]) -> None:
    holder = await relay_on(engine, Unreachable(), relays)
    await write(holder.sessions(engine), "a", "b")
    await write(holder.sessions(engine), "c")
    await die(holder)
    survivor_bus = MemoryBus()
    received = Received()
    await survivor_bus.subscribe("note:written", "readers", received)
    await relay_on(engine, survivor_bus, relays)
    started = asyncio.get_running_loop().time()
    await eventually(lambda: len(received.messages) == 3, timeout=10, what="the dead relay's rows")
    # Taken over once the dead one's claims ran out: no sooner, and well within ten seconds.
    assert SHORT_LEASE.total_seconds() / 2 < asyncio.get_running_loop().time() - started < 10
    await eventually(lambda: _none_unsent(engine), timeout=5, what="the rows marked sent")
    assert survivor_bus.stats.published == 3


async def _none_unsent(engine: AsyncEngine) -> bool:
    return await unsent(engine) == 0


async def test_relays_taking_over_at_once_take_each_row_once(engine: AsyncEngine, relays: list[Relay]) -> None:
    # Rows of a release before claims, or of a relay long dead: nobody's.
    writer = await relay_on(engine, Unreachable(), relays)
    for start in range(0, 200, 20):
        await write(writer.sessions(engine), *(f"n{n}" for n in range(start, start + 20)))
    await die(writer)
    async with engine.begin() as connection:
        await connection.execute(update(OutboxRecord).values(claimed_by=None, claimed_until=None))
    published: Counter[str] = Counter()

    async def count(delivery: Delivery) -> None:
        published[delivery.message.id] += 1

    buses = [MemoryBus() for _ in range(4)]
    for bus in buses:
        await bus.subscribe("note:written", "counters", count)
    await asyncio.gather(*(relay_on(engine, bus, relays) for bus in buses))
    await eventually(lambda: sum(published.values()) >= 200, timeout=20, what="every row relayed")
    await eventually(lambda: _none_unsent(engine), timeout=10, what="every row marked sent")
    assert len(published) == 200
    assert set(published.values()) == {1}, "each row taken by one relay"
    assert sum(bus.stats.published for bus in buses) == 200


async def test_a_relay_that_stops_lets_go_so_that_the_next_start_takes_over_at_once(
    engine: AsyncEngine, relays: list[Relay]
) -> None:
    holder = Relay(db.create_sessionmaker(engine), Unreachable(), retry_delay=0.05)
    await holder.start()
    await write(holder.sessions(engine), "a")
    await holder.close(timeout=0.5)  # it cannot publish: what it holds is left for the next start
    assert await claims(engine) == Counter({holder.owner: 1})
    async with engine.connect() as connection:
        assert await connection.scalar(select(OutboxRecord.claimed_until)) is None
    bus = MemoryBus()
    restarted = await relay_on(engine, bus, relays)
    # Taken over at start, without waiting for a lease to run out.
    await eventually(lambda: bus.stats.published == 1, timeout=LEASE.total_seconds() / 2, what="the row, at once")
    assert restarted.owner != holder.owner
    await eventually(lambda: _none_unsent(engine), timeout=5, what="the row marked sent")


async def test_a_row_whose_commit_the_relay_never_heard_goes_out_once_its_claim_runs_out(
    engine: AsyncEngine, relays: list[Relay]
) -> None:
    # A task cancelled while committing: the row is in, claimed by this relay, and the hook
    # that hands it over never ran. Nothing but the relay's own upkeep can send it.
    bus = MemoryBus()
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay = await relay_on(engine, bus, relays)
    unheard = outbox.sessions(engine, owner=relay.owner, lease=SHORT_LEASE)
    await write(unheard, "lost")
    assert await claims(engine) == Counter({relay.owner: 1})
    await eventually(lambda: len(received.messages) == 1, timeout=10, what="the unheard row, from its own relay")
    await eventually(lambda: _none_unsent(engine), timeout=5, what="the row marked sent")


async def test_a_relay_whose_claims_ran_out_while_it_still_holds_them_publishes_each_once(
    engine: AsyncEngine, relays: list[Relay]
) -> None:
    stuck = Unreachable()
    holder = await relay_on(engine, stuck, relays)
    await write(holder.sessions(engine), "a", "b")
    # Their claims ran out while they were queued here: a commit that waited longer than a lease
    # for SQLite's write lock hands over rows already expired. A take-over round comes next.
    async with engine.begin() as connection:
        await connection.execute(update(OutboxRecord).values(claimed_until=utcnow() - SHORT_LEASE))
    assert await holder._take_over() == 0
    assert await claims(engine) == Counter({holder.owner: 2})
    stuck.reachable = True
    assert await holder.flush(timeout=10)
    assert (stuck.stats.published, await unsent(engine)) == (2, 0)


def test_a_lease_that_upkeep_could_not_renew_in_time_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="must be longer than two upkeep rounds"):
        Relay(db.create_sessionmaker(engine), MemoryBus(), upkeep_every=1.0, lease=timedelta(seconds=2))
