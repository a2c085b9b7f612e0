"""What a module hands to the app: its tables, its routes and its listeners."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from litestar.types import ControllerRouterHandler
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Delivery, Handler, Outcome, Unprocessable
from app.common.events import PAYLOADS, Event, QueueGroups, Subjects

log = logging.getLogger("ticketing.listeners")

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Listener(Generic[E]):
    """Turns one subject's events into a call of the module's own service, in a fresh session.

    ``handle`` returns whether the event was applied or was a duplicate, and raises
    :class:`app.bus.Retry` for an event whose predecessor has not been applied yet.
    """

    subject: Subjects
    group: QueueGroups
    handle: Callable[[E, AsyncSession], Awaitable[Outcome]]

    def bind(self, module: str, sessionmaker: async_sessionmaker[AsyncSession]) -> Handler:
        decoder = msgspec.json.Decoder(PAYLOADS[self.subject])

        async def handler(delivery: Delivery) -> Outcome:
            log.info("[%s] Message received: %s / %s", module, self.subject, self.group)
            try:
                event: E = decoder.decode(delivery.message.data)  # type: ignore[assignment]
            except msgspec.DecodeError as exc:
                raise Unprocessable(f"{self.subject} payload does not match the contract: {exc}") from exc
            async with sessionmaker() as session:
                return await self.handle(event, session)

        return handler


@dataclass(frozen=True)
class Module:
    name: str
    metadata: MetaData
    routes: Sequence[ControllerRouterHandler]
    listeners: Sequence[Listener[Any]] = ()
