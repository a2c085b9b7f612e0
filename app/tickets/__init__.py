"""tickets: tickets for sale, their versions, and who holds them (learned from order events)."""

from app.common.module import Module
from app.tickets.events import PUBLISHES
from app.tickets.listeners import listeners
from app.tickets.models import Base, revoked_tokens
from app.tickets.routes import TicketController

module = Module(
    name="tickets",
    metadata=Base.metadata,
    routes=[TicketController],
    listeners=listeners,
    publishes=PUBLISHES,
    revoked_tokens=revoked_tokens,
)
