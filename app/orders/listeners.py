"""The orders module hears of tickets: it keeps its own copy of each, version by version."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import Outcome
from app.common import revocation
from app.common.events import QueueGroups, Subjects, TicketCreated, TicketUpdated
from app.common.module import Listener
from app.orders import service
from app.orders.models import revoked_tokens


async def on_ticket_created(event: TicketCreated, session: AsyncSession) -> Outcome:
    return await service.copy_ticket(session, event.id, event.title, event.price, event.version)


async def on_ticket_created_in_batch(event: TicketCreated, session: AsyncSession) -> Outcome:
    return await service.copy_ticket_in_batch(session, event.id, event.title, event.price, event.version)


async def on_ticket_updated(event: TicketUpdated, session: AsyncSession) -> Outcome:
    return await service.update_ticket_copy(session, event.id, event.title, event.price, event.version)


def ticket_of(event: TicketCreated | TicketUpdated) -> str:
    return event.id


listeners: list[Listener[Any]] = [
    Listener(
        Subjects.TICKET_CREATED,
        QueueGroups.ORDERS,
        on_ticket_created,
        about=ticket_of,
        optimistic=on_ticket_created_in_batch,
    ),
    Listener(Subjects.TICKET_UPDATED, QueueGroups.ORDERS, on_ticket_updated, about=ticket_of),
    # Sign-outs, kept in this module's own table: its processes refuse those tokens.
    revocation.listener(revoked_tokens, QueueGroups.ORDERS),
]
