"""The transactional outbox: events are rows written with the change that caused them.

``stage()`` adds the row to the caller's session and remembers the message on the session.
When that session commits, the relay is handed the messages directly (no query, no polling
delay), publishes them and marks their rows sent. At start the relay publishes whatever an
earlier run committed but never marked sent, so a crash between commit and publish loses
nothing; at worst an event is published twice, which every listener already tolerates.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Index, LargeBinary, MetaData, String, delete, event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.bus import signals
from app.bus.base import Bus
from app.bus.messages import Message
from app.clock import utcnow
from app.db import TicketingSession, UTCDateTime

log = logging.getLogger("ticketing.outbox")

RELAY_KEY = "ticketing.relay"
_STAGED_KEY = "ticketing.staged"
_MARK_CHUNK = 500
# Decimals go out as JSON numbers, exactly as written: prices are numbers in every payload.
_encoder = msgspec.json.Encoder(decimal_format="number")


class OutboxBase(DeclarativeBase):
    metadata = MetaData()


class OutboxRecord(OutboxBase):
    __tablename__ = "bus_outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(50))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (
        # Only unsent rows are ever searched for, at start-up.
        Index(
            "ix_bus_outbox_unsent",
            "occurred_at",
            sqlite_where=published_at.is_(None),
            postgresql_where=published_at.is_(None),
        ),
    )

    def to_message(self) -> Message:
        return Message(
            id=self.id,
            subject=self.subject,
            data=self.payload,
            occurred_at=self.occurred_at,
            source=self.source,
        )


def encode(payload: msgspec.Struct) -> bytes:
    """A payload as it goes on the wire: JSON, decimals as numbers."""
    return _encoder.encode(payload)


def stage(session: AsyncSession, source: str, subject: str, payload: msgspec.Struct) -> Message:
    """Write an event to the outbox in the session's transaction; it is published after commit."""
    message = Message(
        id=str(uuid.uuid4()),
        subject=subject,
        data=encode(payload),
        occurred_at=utcnow(),
        source=source,
    )
    session.add(
        OutboxRecord(
            id=message.id,
            subject=subject,
            source=source,
            payload=message.data,
            occurred_at=message.occurred_at,
        )
    )
    session.info.setdefault(_STAGED_KEY, []).append(message)
    return message


@event.listens_for(TicketingSession, "after_commit")
def _hand_to_relay(session: Session) -> None:
    staged = session.info.pop(_STAGED_KEY, None)
    relay = session.info.get(RELAY_KEY)
    if staged and relay is not None:
        relay.enqueue(staged)


@event.listens_for(TicketingSession, "after_rollback")
def _forget_staged(session: Session) -> None:
    session.info.pop(_STAGED_KEY, None)


class Relay:
    """Publishes committed outbox events, in commit order, and marks them sent.

    Two loops: one publishes as soon as events are handed over; the other marks rows sent,
    as one UPDATE for everything done since its last round. Marking never delays publishing,
    and under load both naturally work in batches.

    A row is done when the broker has the event, for a durable bus; for one that lives in this
    process only, when every group here has settled it, so that an event still queued or
    waiting for a retry when the process stops is published again at the next start.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        retry_delay: float = 0.5,
        keep_sent: timedelta = timedelta(days=1),
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._retry_delay = retry_delay
        self._keep_sent = keep_sent
        self._queue: list[Message] = []
        self._published: list[str] = []
        self._wake = asyncio.Event()
        self._wake_marker = asyncio.Event()
        # Set while there is nothing to publish, and nothing to mark, respectively.
        self._published_all = asyncio.Event()
        self._published_all.set()
        self._marked_all = asyncio.Event()
        self._marked_all.set()
        self._publisher: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None
        if not bus.durable:
            signals.settled.connect(self._on_settled, sender=bus)

    @property
    def backlog(self) -> int:
        """Events committed but not yet handed to the bus."""
        return len(self._queue)

    def enqueue(self, messages: Sequence[Message]) -> None:
        self._queue.extend(messages)
        self._published_all.clear()
        self._wake.set()

    async def start(self) -> int:
        """Queue what an earlier run left unsent, then relay. Returns how many were recovered."""
        async with self._sessionmaker() as session:
            if self._keep_sent:
                # Sent rows are history only; keep a day of it for people reading the table.
                cutoff = utcnow() - self._keep_sent
                await session.execute(delete(OutboxRecord).where(OutboxRecord.published_at < cutoff))
                await session.commit()
            rows = await session.scalars(
                select(OutboxRecord).where(OutboxRecord.published_at.is_(None)).order_by(OutboxRecord.occurred_at)
            )
            recovered = [row.to_message() for row in rows]
        if recovered:
            log.info("[outbox] Relaying %d event(s) committed by an earlier run", len(recovered))
            # Ahead of anything committed since: the recovered events are older.
            self._queue[:0] = recovered
            self.enqueue([])
        self._publisher = asyncio.create_task(self._publish_loop(), name="outbox-publish")
        self._marker = asyncio.create_task(self._mark_loop(), name="outbox-mark-sent")
        return len(recovered)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything committed so far is published, and every row done so far marked sent.

        On a bus that is not durable, a row is done only once its event has settled: flush
        does not wait for the handlers.
        """
        return await self._wait_for(timeout, self._published_all, self._marked_all)

    async def stop(self, timeout: float = 10.0) -> None:
        """Publish what is committed, then stop publishing; rows are marked until :meth:`close`."""
        if self._publisher is None:
            return
        # Publishing only: rows are marked until close(), and a database slow to mark them at
        # shutdown must neither hold this up nor pass for events left unsent.
        if not await self._wait_for(timeout, self._published_all):
            log.warning("[outbox] %d event(s) left unsent; they go out at the next start", self.backlog)
        self._publisher.cancel()
        await asyncio.gather(self._publisher, return_exceptions=True)
        self._publisher = None

    async def close(self, timeout: float = 10.0) -> None:
        """Stop, mark what has settled meanwhile (the bus's last handlers), and stop for good."""
        await self.stop(timeout)
        if self._marker is None:
            return
        await self._wait_for(timeout, self._marked_all)
        if not self._bus.durable:
            signals.settled.disconnect(self._on_settled, sender=self._bus)
        self._marker.cancel()
        await asyncio.gather(self._marker, return_exceptions=True)
        self._marker = None

    @staticmethod
    async def _wait_for(timeout: float, *events: asyncio.Event) -> bool:
        try:
            async with asyncio.timeout(timeout):
                for event in events:
                    await event.wait()
        except TimeoutError:
            return False
        return True

    def _on_settled(self, _bus: object, message_id: str) -> None:
        self._done(message_id)

    def _done(self, *message_ids: str) -> None:
        self._published.extend(message_ids)
        self._marked_all.clear()
        self._wake_marker.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:]
                # Logged as the batch goes out, as the original did: a listener in this very
                # process may well receive an event before the broker's acknowledgement is back.
                for message in batch:
                    log.info("[%s] Event published to subject %s", message.source, message.subject)
                try:
                    await self._bus.publish(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "[outbox] Publishing %d event(s) failed, publishing them again in %.1fs: %s",
                        len(batch),
                        self._retry_delay,
                        exc,
                    )
                    await asyncio.sleep(self._retry_delay)
                    continue
                del self._queue[: len(batch)]
                if self._bus.durable:
                    self._done(*(message.id for message in batch))
            self._published_all.set()

    async def _mark_loop(self) -> None:
        while True:
            await self._wake_marker.wait()
            self._wake_marker.clear()
            while self._published:
                ids, self._published = self._published, []
                await self._mark_sent(ids)
            self._marked_all.set()

    async def _mark_sent(self, ids: Sequence[str]) -> None:
        now = utcnow()
        try:
            async with self._sessionmaker() as session:
                for start in range(0, len(ids), _MARK_CHUNK):
                    await session.execute(
                        update(OutboxRecord)
                        .where(OutboxRecord.id.in_(ids[start : start + _MARK_CHUNK]))
                        .values(published_at=now)
                    )
                await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Published but not marked: the next start publishes them again, which is safe.
            log.warning("[outbox] Could not mark %d event(s) sent: %s", len(ids), exc)


def relay_info(relay: Relay) -> dict[str, Any]:
    """Session info that routes a session's staged events to ``relay`` on commit."""
    return {RELAY_KEY: relay}
