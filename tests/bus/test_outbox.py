"""The transactional outbox and its relay, against a real SQLite file (and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import MetaData, String, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app import db
from app.bus import Delivery, DeliveryPolicy, Message, Retry
from app.bus.memory import MemoryBus
from app.bus.outbox import OutboxBase, OutboxRecord, stage
from app.bus.relay import Relay
from app.waiting import eventually
from tests.bus.test_contract import message


class Base(DeclarativeBase):
    metadata = MetaData()


class Note(Base):
    __tablename__ = "test_note"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


class NoteWritten(msgspec.Struct):
    id: str
    text: str


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(OutboxBase.metadata.create_all)
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


class Received:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.messages.append(delivery.message)

    @property
    def bodies(self) -> list[bytes]:
        return [message.data for message in self.messages]


async def started(
    engine: AsyncEngine, bus: MemoryBus, upkeep_every: float = 1.0
) -> tuple[Relay, async_sessionmaker[AsyncSession]]:
    relay = Relay(db.create_sessionmaker(engine), bus, upkeep_every=upkeep_every)
    await relay.start()
    return relay, relay.sessions(engine)


async def write(sessions: async_sessionmaker[AsyncSession], *texts: str, commit: bool = True) -> None:
    async with sessions() as session:
        for text in texts:
            session.add(Note(id=text, text=text))
            stage(session, "notes", "note:written", NoteWritten(id=text, text=text))
        if commit:
            await session.commit()
        else:
            await session.rollback()


async def unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(OutboxRecord).where(OutboxRecord.published_at.is_(None))
        return int(await connection.scalar(query) or 0)


async def test_committed_event_is_published_and_its_row_marked_sent(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay, sessions = await started(engine, bus)

    await write(sessions, "hello")
    await eventually(lambda: received.messages, what="the event")
    assert msgspec.json.decode(received.bodies[0]) == {"id": "hello", "text": "hello"}
    assert received.messages[0].source == "notes"
    await eventually(lambda: relay.backlog == 0)
    await relay.close()
    assert await unsent(engine) == 0
    await bus.close()


async def test_rolled_back_change_publishes_nothing(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    relay, sessions = await started(engine, bus)
    await write(sessions, "never", commit=False)
    await write(sessions, "kept")
    await relay.flush()
    assert bus.stats.published == 1
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(OutboxRecord)) == 1
    await relay.close()


async def test_nothing_is_published_before_the_transaction_commits(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    relay, sessions = await started(engine, bus)
    async with sessions() as session:
        session.add(Note(id="n", text="n"))
        stage(session, "notes", "note:written", NoteWritten(id="n", text="n"))
        await session.flush()
        for _ in range(20):  # give a wrongly eager relay every chance to run
            await asyncio.sleep(0)
        assert bus.stats.published == 0
        assert relay.backlog == 0
        await session.commit()
    await relay.flush()
    assert bus.stats.published == 1
    await relay.close()


async def test_events_go_out_in_commit_order(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay, sessions = await started(engine, bus)
    texts = [f"note-{n:03}" for n in range(40)]
    for text in texts:
        await write(sessions, text)
    await eventually(lambda: len(received.messages) == 40)
    assert [msgspec.json.decode(body)["id"] for body in received.bodies] == texts
    await relay.close()


async def test_concurrent_writers_lose_no_event(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay, sessions = await started(engine, bus)
    texts = [f"w{n}" for n in range(50)]
    await asyncio.gather(*(write(sessions, text) for text in texts))
    await eventually(lambda: len(received.messages) == 50)
    assert sorted(msgspec.json.decode(body)["id"] for body in received.bodies) == sorted(texts)
    await relay.close()
    assert await unsent(engine) == 0


class FlakyBus(MemoryBus):
    """A real in-memory bus whose first ``failures`` publishes fail, as a broker outage would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        await super().publish(messages)


async def test_publish_failures_are_retried_and_nothing_is_lost(engine: AsyncEngine) -> None:
    bus = FlakyBus(failures=3)
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay = Relay(db.create_sessionmaker(engine), bus, retry_delay=0.01)
    await relay.start()
    sessions = relay.sessions(engine)
    await write(sessions, "a", "b")
    await write(sessions, "c")
    await eventually(lambda: len(received.messages) == 3)
    assert [msgspec.json.decode(body)["id"] for body in received.bodies] == ["a", "b", "c"]
    await relay.close()
    assert await unsent(engine) == 0


CRASH_AFTER_COMMIT = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import timedelta
    import msgspec
    from app import db
    from app.bus.memory import MemoryBus
    from app.bus.outbox import stage
    from app.bus.relay import Relay
    from tests.bus.test_outbox import Note, NoteWritten

    async def main() -> None:
        engine = db.create_engine(sys.argv[1])
        # Its rows are claimed for 0.6 s, not the production lease: the next start waits that long.
        relay = Relay(db.create_sessionmaker(engine), MemoryBus(), upkeep_every=0.1, lease=timedelta(seconds=0.6))
        await relay.start()
        sessions = relay.sessions(engine)
        async with sessions() as session:
            session.add(Note(id="survivor", text="survivor"))
            stage(session, "notes", "note:written", NoteWritten(id="survivor", text="survivor"))
            await session.commit()
        # Committed, and the relay has not had a chance to publish: die right here.
        os._exit(0)

    asyncio.run(main())
    """
)


async def test_an_event_committed_just_before_a_crash_is_published_at_the_next_start(
    engine: AsyncEngine, database_url: str
) -> None:
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_AFTER_COMMIT, database_url, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(crashed.communicate(), 60)
    assert crashed.returncode == 0, stderr.decode()
    assert await unsent(engine) == 1, "the event was committed but never published"

    bus = MemoryBus()
    received = Received()
    await bus.subscribe("note:written", "readers", received)
    relay, _ = await started(engine, bus, upkeep_every=0.1)
    await eventually(lambda: received.messages, what="the recovered event")
    assert msgspec.json.decode(received.bodies[0])["id"] == "survivor"
    await relay.close()
    assert await unsent(engine) == 0

    # A further restart has nothing left to send.
    again = MemoryBus()
    relay, _ = await started(engine, again)
    await relay.close()
    assert again.stats.published == 0


async def test_stop_publishes_what_was_committed_before_it(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    relay, sessions = await started(engine, bus)
    await write(sessions, "last-words")
    await relay.close()
    assert bus.stats.published == 1
    assert await unsent(engine) == 0


async def test_an_event_unsettled_when_the_process_stops_is_published_again_at_the_next_start(
    engine: AsyncEngine,
) -> None:
    # The in-memory bus forgets everything when the process stops: its events stay in the outbox
    # until every group has settled them, not merely until they were handed to the bus.
    bus = MemoryBus(DeliveryPolicy(max_deliver=1000, backoff=0.005, backoff_max=0.01))
    attempts: list[int] = []

    async def not_yet(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise Retry("waiting for something that will not come before shutdown")

    await bus.subscribe("note:written", "readers", not_yet)
    relay, sessions = await started(engine, bus)
    await write(sessions, "unsettled", "no-one-else")
    await eventually(lambda: len(attempts) >= 4, what="the event being retried")
    await relay.stop()
    await bus.close()
    await relay.close()
    assert await unsent(engine) == 2, "published, never settled: still owed"

    again = MemoryBus()
    received = Received()
    await again.subscribe("note:written", "readers", received)
    relay, _ = await started(engine, again)
    await eventually(lambda: len(received.messages) == 2, what="the events, published again")
    await eventually(lambda: again.pending == 0)
    await relay.close()
    assert await unsent(engine) == 0


async def test_an_event_no_group_here_wants_is_marked_sent_at_once(engine: AsyncEngine) -> None:
    bus = MemoryBus()
    relay, sessions = await started(engine, bus)
    await write(sessions, "for-nobody")
    await eventually(lambda: relay.backlog == 0)
    await relay.close()
    assert await unsent(engine) == 0


class DurableBus(MemoryBus):
    """A real in-memory bus that says it is durable, as NATS is: rows are done once it has the event."""

    durable = True


async def test_stop_waits_for_publishing_only_and_does_not_call_marked_rows_unsent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Marking rows sent goes on until close(); stop() is about publishing. A slow database at
    # shutdown must neither hold stop() up nor make it warn that published events are unsent.
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(OutboxBase.metadata.create_all)
        await connection.run_sync(Base.metadata.create_all)
    bus = DurableBus()
    relay, sessions = await started(engine, bus)
    await write(sessions, "published")
    assert await relay.flush()
    async with engine.connect() as locker:
        # An open write transaction: the relay's UPDATE waits for it (SQLite allows one writer).
        await locker.execute(insert(Note).values(id="lock", text="lock"))
        relay.enqueue([message("note:written", "late")])
        await relay.stop(timeout=0.3)
        await locker.rollback()
    await relay.close()
    await engine.dispose()
    assert bus.stats.published == 2
    assert "left unsent" not in caplog.text, caplog.text


async def test_staging_on_a_session_that_does_not_write_the_outbox_is_refused(engine: AsyncEngine) -> None:
    # A plain session would commit the change and drop its event without a word.
    async with db.create_sessionmaker(engine)() as session:
        session.add(Note(id="n", text="n"))
        with pytest.raises(TypeError, match="needs a session that writes the outbox"):
            stage(session, "notes", "note:written", NoteWritten(id="n", text="n"))
    assert await unsent(engine) == 0
