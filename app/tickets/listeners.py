"""The tickets module hears of orders: they hold and release its tickets."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import Outcome
from app.common import revocation
from app.common.events import OrderCancelled, OrderCreated, QueueGroups, Subjects
from app.common.module import Listener
from app.tickets import service
from app.tickets.models import revoked_tokens


async def on_order_created(event: OrderCreated, session: AsyncSession) -> Outcome:
    return await service.hold_for_order(session, event.id, event.ticket.id, event.version)


async def on_order_cancelled(event: OrderCancelled, session: AsyncSession) -> Outcome:
    return await service.release_for_order(session, event.id, event.ticket.id, event.version)


def ticket_of(event: OrderCreated | OrderCancelled) -> str:
    # Keyed by the ticket, not the order: a new order waits for the ticket's last holder to let go.
    return event.ticket.id


listeners: list[Listener[Any]] = [
    Listener(Subjects.ORDER_CREATED, QueueGroups.TICKETS, on_order_created, about=ticket_of),
    Listener(Subjects.ORDER_CANCELLED, QueueGroups.TICKETS, on_order_cancelled, about=ticket_of),
    # Sign-outs, kept in this module's own table: its processes refuse those tokens.
    revocation.listener(revoked_tokens, QueueGroups.TICKETS),
]
