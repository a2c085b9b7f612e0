"""The outbox's relay: publishes committed events in commit order, marks their rows sent, keeps its claims.

Three loops. One publishes as soon as a commit hands events over; one marks rows sent, as one
UPDATE for everything done in the last 50 ms (at once when someone waits for it: flush, close),
so that marking never delays publishing or delivery; one,
every second, renews the claims of the rows still on their way from here and takes over the rows
nobody holds any more (a process that died, an earlier run of this one), with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL so that several processes never take the same row. Under load the first
two work in batches by themselves; when all is well the third finds nothing to do.

A row is done when the broker has the event, for a durable bus; for one that lives in this
process only, when every group here has settled it, so that an event still queued or waiting
for a retry when the process stops is published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.bus import outbox, signals
from app.bus.base import Bus
from app.bus.messages import Message
from app.bus.outbox import LEASE, OutboxRecord, OutboxSession, staged
from app.clock import utcnow

log = logging.getLogger("ticketing.outbox")

_CHUNK = 500
# Sent rows are history only; deleting those older than a day is done this often.
_CLEAN_EVERY = 3600.0


class Relay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        retry_delay: float = 0.5,
        keep_sent: timedelta = timedelta(days=1),
        upkeep_every: float = 1.0,
        mark_every: float = 0.05,
        lease: timedelta = LEASE,
    ) -> None:
        self.owner = str(uuid.uuid4())
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._retry_delay = retry_delay
        self._keep_sent = keep_sent
        self._upkeep_every = upkeep_every
        if lease.total_seconds() <= 2 * upkeep_every:
            # Renewed once per upkeep, a claim must outlast two of them or a live relay loses its rows.
            raise ValueError(f"the lease ({lease}) must be longer than two upkeep rounds ({upkeep_every} s each)")
        self._lease = lease
        self._mark_every = mark_every
        self._queue: list[Message] = []
        self._published: list[str] = []
        # Rows this relay holds, staged or taken over here and not marked sent yet: it renews their claims.
        self._held: set[str] = set()
        self._wake = asyncio.Event()
        self._wake_marker = asyncio.Event()
        # Set by whoever waits for the marking (flush, close): no gathering then.
        self._mark_now = asyncio.Event()
        # Set while there is nothing to publish, and nothing to mark, respectively.
        self._published_all = asyncio.Event()
        self._published_all.set()
        self._marked_all = asyncio.Event()
        self._marked_all.set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        if not bus.durable:
            signals.settled.connect(self._on_settled, sender=bus)

    def sessions(self, engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
        """Sessions whose commits hand the events they staged to this relay, at once."""

        class RelayedSession(OutboxSession):
            """A class of this relay's own: its hook hears this relay's sessions and no others."""

        event.listen(RelayedSession, "after_commit", self._committed)
        return outbox.sessions(engine, session_class=RelayedSession, owner=self.owner, lease=self._lease)

    @property
    def backlog(self) -> int:
        """Events committed but not yet handed to the bus."""
        return len(self._queue)

    def enqueue(self, messages: Sequence[Message]) -> None:
        self._queue.extend(messages)
        self._held.update(message.id for message in messages)
        self._published_all.clear()
        self._wake.set()

    async def start(self) -> int:
        """Take over what nobody holds (an earlier run's rows, say), then relay. Returns how many were taken."""
        taken = await self._take_over()
        self._tasks = {
            "publish": asyncio.create_task(self._publish_loop(), name="outbox-publish"),
            "mark": asyncio.create_task(self._mark_loop(), name="outbox-mark-sent"),
            "upkeep": asyncio.create_task(self._upkeep_loop(), name="outbox-upkeep"),
        }
        return taken

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything committed so far is published, and every row done so far marked sent.

        On a bus that is not durable, a row is done only once its event has settled: flush
        does not wait for the handlers.
        """
        self._mark_now.set()
        return await self._wait_for(timeout, self._published_all, self._marked_all)

    async def stop(self, timeout: float = 10.0) -> None:
        """Publish what is committed, then stop publishing (and taking over); rows are marked until :meth:`close`."""
        await self._cancel("upkeep")
        if "publish" not in self._tasks:
            return
        # Publishing only: rows are marked until close(), and a database slow to mark them at
        # shutdown must neither hold this up nor pass for events left unsent.
        if not await self._wait_for(timeout, self._published_all):
            log.warning("[outbox] %d event(s) left unsent; they go out at the next start", self.backlog)
        await self._cancel("publish")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop, mark what has settled meanwhile (the bus's last handlers), let go of the rest, and stop for good."""
        await self.stop(timeout)
        if "mark" not in self._tasks:
            return
        self._mark_now.set()
        await self._wait_for(timeout, self._marked_all)
        if not self._bus.durable:
            signals.settled.disconnect(self._on_settled, sender=self._bus)
        await self._cancel("mark")
        await self._let_go()

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @staticmethod
    async def _wait_for(timeout: float, *events: asyncio.Event) -> bool:
        try:
            async with asyncio.timeout(timeout):
                for waited in events:
                    await waited.wait()
        except TimeoutError:
            return False
        return True

    def _committed(self, session: Session) -> None:
        if messages := staged(session):
            self.enqueue(messages)

    def _on_settled(self, _bus: object, message_id: str) -> None:
        self._done(message_id)

    def _done(self, *message_ids: str) -> None:
        self._published.extend(message_ids)
        self._marked_all.clear()
        self._wake_marker.set()

    # -- publishing and marking ----------------------------------------------------------------

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
            # Marking is bookkeeping for a restart, not delivery: it gathers what settles for a
            # moment, one UPDATE for all, instead of taking the loop (and the database's write
            # lock) once per event while answers and deliveries wait.
            if not self._mark_now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._mark_every):
                        await self._mark_now.wait()
            self._wake_marker.clear()
            while self._published:
                ids, self._published = self._published, []
                if await self._mark_sent(ids):
                    self._held.difference_update(ids)
                else:
                    # Published, not marked: kept (and still claimed) for the next round.
                    self._published[:0] = ids
                    await asyncio.sleep(self._retry_delay)
            self._marked_all.set()
            self._mark_now.clear()

    async def _mark_sent(self, ids: Sequence[str]) -> bool:
        try:
            await self._update(ids, published_at=utcnow())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("[outbox] Could not mark %d event(s) sent, trying again: %s", len(ids), exc)
            return False
        return True

    async def _update(self, ids: Sequence[str], **values: object) -> None:
        async with self._sessionmaker() as session:
            for start in range(0, len(ids), _CHUNK):
                chosen = OutboxRecord.id.in_(ids[start : start + _CHUNK])
                await session.execute(update(OutboxRecord).where(chosen).values(**values))
            await session.commit()

    # -- claims --------------------------------------------------------------------------------

    async def _upkeep_loop(self) -> None:
        cleaned = float("-inf")
        while True:
            await asyncio.sleep(self._upkeep_every)
            try:
                await self._renew()
                await self._take_over()
                if time.monotonic() - cleaned > _CLEAN_EVERY:
                    await self._clean()
                    cleaned = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("[outbox] Keeping the outbox's claims failed, trying again: %s", exc)

    async def _renew(self) -> None:
        """Hold on to the rows on their way from here: their claims would otherwise run out."""
        if self._held:
            await self._update(sorted(self._held), claimed_by=self.owner, claimed_until=utcnow() + self._lease)

    async def _take_over(self) -> int:
        """Claim and queue the rows no live relay holds: unsent, and unclaimed or claimed too long ago."""
        now = utcnow()
        free = (
            select(OutboxRecord.id)
            .where(
                OutboxRecord.published_at.is_(None),
                # This relay's own rows too: one whose commit was never heard here (a task
                # cancelled while committing) would otherwise wait for the next run of the process.
                or_(OutboxRecord.claimed_until.is_(None), OutboxRecord.claimed_until < now),
            )
            .order_by(OutboxRecord.occurred_at)
            .limit(_CHUNK)
            # PostgreSQL: a row another process is taking right now is left to it (SQLite has one writer).
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(OutboxRecord)
            .where(OutboxRecord.id.in_(free.scalar_subquery()))
            .values(claimed_by=self.owner, claimed_until=now + self._lease)
            .returning(OutboxRecord)
        )
        async with self._sessionmaker() as session:
            found = (await session.scalars(claim)).all()
            await session.commit()
        # A row still on its way from here (its renewal late) is claimed again above, not queued twice.
        rows = sorted((row for row in found if row.id not in self._held), key=lambda row: row.occurred_at)
        if rows:
            log.info(
                "[outbox] Relaying %d event(s) no live process holds (an earlier run's, or a stopped one's)", len(rows)
            )
            self.enqueue([row.to_message() for row in rows])
        return len(rows)

    async def _let_go(self) -> None:
        """At shutdown: what is still unsent here is anybody's to relay at once (a restart of this process, say)."""
        if self._held:
            try:
                await self._update(sorted(self._held), claimed_until=None)
            except Exception as exc:
                log.warning(
                    "[outbox] Could not let go of %d event(s); they are taken over later: %s", len(self._held), exc
                )

    async def _clean(self) -> None:
        if self._keep_sent:
            async with self._sessionmaker() as session:
                cutoff = utcnow() - self._keep_sent
                await session.execute(delete(OutboxRecord).where(OutboxRecord.published_at < cutoff))
                await session.commit()
