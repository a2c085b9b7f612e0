"""What the tickets module publishes, built from its own model."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus.outbox import stage
from app.common.events import Subjects, TicketCreated, TicketUpdated
from app.common.versioning import FIRST_VERSION
from app.tickets.models import Ticket

MODULE = "tickets"
PUBLISHES = (Subjects.TICKET_CREATED, Subjects.TICKET_UPDATED)


def stage_ticket_created(session: AsyncSession, ticket: Ticket) -> None:
    """Staged before the ticket's INSERT: one flush, the commit's, then writes both."""
    event = TicketCreated(
        id=ticket.id, version=FIRST_VERSION, title=ticket.title, price=ticket.price, user_id=ticket.user_id
    )
    stage(session, MODULE, Subjects.TICKET_CREATED, event)


def stage_ticket_updated(session: AsyncSession, ticket: Ticket) -> None:
    event = TicketUpdated(
        id=ticket.id,
        version=ticket.version,
        title=ticket.title,
        price=ticket.price,
        user_id=ticket.user_id,
        order_id=ticket.order_id,
    )
    stage(session, MODULE, Subjects.TICKET_UPDATED, event)
