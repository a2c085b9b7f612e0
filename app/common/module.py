"""What a module hands to the app: its tables, its routes, its listeners and its background work."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from litestar.types import ControllerRouterHandler
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Delivery, Outcome, Unprocessable
from app.common.events import PAYLOADS, Event, QueueGroups, Subjects
from app.common.versioning import retry_if_raced

log = logging.getLogger("ticketing.listeners")

E = TypeVar("E", bound=Event)


Apply = Callable[[E, AsyncSession], Awaitable[Outcome]]


@dataclass(frozen=True)
class Listener(Generic[E]):
    """Turns one subject's events into calls of the module's own service.

    ``handle`` applies one event to the session and says whether it was applied or was a
    duplicate; it raises :class:`app.bus.Retry` for an event whose predecessor has not been
    applied yet, before changing anything. It never commits: the transaction is the listener's.

    ``about`` names the record an event concerns (a ticket's id, for every listener here): an
    event refused as early waits until an event about the same record has been applied.

    ``optimistic``, when given, is a cheaper ``handle`` for batches: it may skip checks that
    the database enforces anyway (a unique key, say), because a batch that trips over one is
    rolled back as a whole and its events go through ``handle`` one at a time.
    """

    subject: Subjects
    group: QueueGroups
    handle: Apply[E]
    about: Callable[[E], str]
    optimistic: Apply[E] | None = None

    def bind(self, module: str, sessionmaker: async_sessionmaker[AsyncSession]) -> BoundListener[E]:
        return BoundListener(self, module, sessionmaker)


class BoundListener(Generic[E]):
    """A listener as the bus sees it: a handler for one delivery, or for a batch of them."""

    def __init__(self, listener: Listener[E], module: str, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.listener = listener
        self.module = module
        self.sessionmaker = sessionmaker
        self.decoder = msgspec.json.Decoder(PAYLOADS[listener.subject])

    def _decode(self, delivery: Delivery) -> E:
        try:
            event: E = self.decoder.decode(delivery.message.data)  # type: ignore[assignment]
        except (msgspec.DecodeError, RecursionError) as exc:
            raise Unprocessable(f"{self.listener.subject} payload does not match the contract: {exc}") from exc
        return event

    def key(self, delivery: Delivery) -> str | None:
        """The record the delivery is about; None for a payload that does not decode."""
        try:
            event: E = self.decoder.decode(delivery.message.data)  # type: ignore[assignment]
        except (msgspec.DecodeError, RecursionError):
            return None
        return self.listener.about(event)

    def _received(self) -> None:
        log.info("[%s] Message received: %s / %s", self.module, self.listener.subject, self.listener.group)

    async def __call__(self, delivery: Delivery) -> Outcome:
        self._received()
        event = self._decode(delivery)
        async with self.sessionmaker() as session, retry_if_raced(session):
            outcome = await self.listener.handle(event, session)
            await session.commit()
        return outcome

    async def batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        events = [self._decode(delivery) for delivery in deliveries]
        apply = self.listener.optimistic or self.listener.handle
        # One transaction for all: any surprise undoes it, and the bus replays them one by one.
        async with self.sessionmaker() as session:
            outcomes = [await apply(event, session) for event in events]
            await session.commit()
        for _ in deliveries:
            self._received()
        return outcomes


#: Work a module does on its own for as long as the app runs (expiring orders, say): started
#: after the listeners, cancelled first at shutdown. It must survive its own failures.
Worker = Callable[[async_sessionmaker[AsyncSession]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Module:
    name: str
    metadata: MetaData
    routes: Sequence[ControllerRouterHandler]
    listeners: Sequence[Listener[Any]] = ()
    workers: Sequence[Worker] = ()
    #: The subjects this module publishes (its ``events.py``); the AsyncAPI document says so.
    publishes: Sequence[Subjects] = ()
    #: Where the module keeps the tokens signed out (app/common/revocation.py); every module that
    #: accepts tokens has one.
    revoked_tokens: Table | None = None
