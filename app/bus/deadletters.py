"""Where a bus whose broker keeps nothing (the in-memory one) keeps its dead letters: the database.

A dead letter is written before its message counts as settled, so before the outbox marks the
event sent: a process killed at any moment either still has the event to publish again, or has
its dead letter. A replay marks the dead letter as being replayed instead of deleting it; it is
forgotten once the replayed delivery has settled, and a replay a crash cut short starts again when
its group subscribes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import Boolean, ColumnElement, Index, LargeBinary, String, Text, UniqueConstraint, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.bus.messages import DeadLetter, Message
from app.bus.outbox import OutboxBase
from app.db import UTCDateTime


class DeadLetters(Protocol):
    async def keep(self, dead: DeadLetter) -> None:
        """Keep a dead letter; one already kept for its message and group is replaced."""

    async def listing(self) -> list[DeadLetter]:
        """The dead letters not being replayed, oldest first."""

    async def take(self, dead_id: str) -> DeadLetter | None:
        """Mark a dead letter as being replayed and return it; None if unknown or already taken."""

    async def about(self, group: str, key: str) -> list[DeadLetter]:
        """The dead letters of ``group`` about the record ``key``, not being replayed."""

    async def replayed(self, dead_id: str) -> None:
        """Its replay has settled: forget it (a new death keeps a new one)."""

    async def in_replay(self, subject: str, group: str) -> list[DeadLetter]:
        """Replays of ``subject`` to ``group`` that had not settled when the process stopped."""


class InProcessDeadLetters:
    """Dead letters in a dict: for a bus used without a database (the demo's naive listener, tests)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[DeadLetter, bool]] = {}

    async def keep(self, dead: DeadLetter) -> None:
        self._kept[(dead.message.id, dead.group)] = (dead, False)

    async def listing(self) -> list[DeadLetter]:
        return sorted((dead for dead, taken in self._kept.values() if not taken), key=lambda dead: dead.failed_at)

    async def take(self, dead_id: str) -> DeadLetter | None:
        for spot, (dead, taken) in self._kept.items():
            if dead.id == dead_id and not taken:
                self._kept[spot] = (dead, True)
                return dead
        return None

    async def about(self, group: str, key: str) -> list[DeadLetter]:
        return [dead for dead in await self.listing() if dead.group == group and dead.key == key]

    async def replayed(self, dead_id: str) -> None:
        for spot, (dead, _) in list(self._kept.items()):
            if dead.id == dead_id:
                del self._kept[spot]

    async def in_replay(self, subject: str, group: str) -> list[DeadLetter]:
        return []  # nothing outlives the process here


class DeadLetterRecord(OutboxBase):
    __tablename__ = "bus_dead_letter"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(50))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    group_name: Mapped[str] = mapped_column(String(100))
    record_key: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column()
    error: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replaying: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("message_id", "group_name", name="uq_bus_dead_letter_message_group"),
        Index("ix_bus_dead_letter_group_key", "group_name", "record_key"),
    )

    def to_dead_letter(self) -> DeadLetter:
        message = Message(
            id=self.message_id,
            subject=self.subject,
            data=self.payload,
            occurred_at=self.occurred_at,
            source=self.source,
        )
        return DeadLetter(
            id=self.id,
            group=self.group_name,
            attempts=self.attempts,
            error=self.error,
            failed_at=self.failed_at,
            message=message,
            key=self.record_key,
        )


class SqlDeadLetters:
    """Dead letters in the ``bus_dead_letter`` table, beside the outbox."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def keep(self, dead: DeadLetter) -> None:
        # One bus per database writes here (the in-memory bus lives in one process): a read
        # then a write in one transaction is safe, and the same on every database.
        async with self._sessionmaker() as session:
            found = await session.scalar(
                select(DeadLetterRecord).where(
                    DeadLetterRecord.message_id == dead.message.id, DeadLetterRecord.group_name == dead.group
                )
            )
            if found is None:
                session.add(_record(dead))
            else:
                found.attempts, found.error, found.failed_at = dead.attempts, dead.error, dead.failed_at
                found.record_key, found.replaying = dead.key, False
            await session.commit()

    async def listing(self) -> list[DeadLetter]:
        return await self._select(DeadLetterRecord.replaying.is_(False))

    async def take(self, dead_id: str) -> DeadLetter | None:
        async with self._sessionmaker() as session:
            taken = await session.execute(
                update(DeadLetterRecord)
                .where(DeadLetterRecord.id == dead_id, DeadLetterRecord.replaying.is_(False))
                .values(replaying=True)
            )
            await session.commit()
            if not taken.rowcount:  # type: ignore[attr-defined]
                return None
            record = await session.get(DeadLetterRecord, dead_id)
            return record.to_dead_letter() if record else None

    async def about(self, group: str, key: str) -> list[DeadLetter]:
        return await self._select(
            DeadLetterRecord.group_name == group,
            DeadLetterRecord.record_key == key,
            DeadLetterRecord.replaying.is_(False),
        )

    async def replayed(self, dead_id: str) -> None:
        async with self._sessionmaker() as session:
            record = await session.get(DeadLetterRecord, dead_id)
            if record is not None and record.replaying:
                await session.delete(record)
                await session.commit()

    async def in_replay(self, subject: str, group: str) -> list[DeadLetter]:
        return await self._select(
            DeadLetterRecord.subject == subject,
            DeadLetterRecord.group_name == group,
            DeadLetterRecord.replaying.is_(True),
        )

    async def _select(self, *conditions: ColumnElement[bool]) -> list[DeadLetter]:
        query = select(DeadLetterRecord).where(*conditions).order_by(DeadLetterRecord.failed_at)
        async with self._sessionmaker() as session:
            return [record.to_dead_letter() for record in await session.scalars(query)]


def _record(dead: DeadLetter) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=dead.id,
        message_id=dead.message.id,
        subject=dead.message.subject,
        source=dead.message.source,
        payload=dead.message.data,
        occurred_at=dead.message.occurred_at,
        group_name=dead.group,
        record_key=dead.key,
        attempts=dead.attempts,
        error=dead.error,
        failed_at=dead.failed_at,
        replaying=False,
    )
