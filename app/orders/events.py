"""What the orders module publishes, built from its own model."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus.outbox import stage
from app.common.events import OrderCancelled, OrderCreated, OrderTicket, Subjects, TicketRef
from app.common.versioning import FIRST_VERSION
from app.orders.models import Order

MODULE = "orders"
PUBLISHES = (Subjects.ORDER_CREATED, Subjects.ORDER_CANCELLED)


def stage_order_created(session: AsyncSession, order: Order, ticket_price: Decimal) -> None:
    """Staged before the order's INSERT: one flush, the commit's, then writes both."""
    event = OrderCreated(
        id=order.id,
        version=FIRST_VERSION,
        status=order.status,
        user_id=order.user_id,
        expires_at=order.expires_at,
        ticket=OrderTicket(id=order.ticket_id, price=ticket_price),
    )
    stage(session, MODULE, Subjects.ORDER_CREATED, event)


def stage_order_cancelled(session: AsyncSession, order: Order) -> None:
    event = OrderCancelled(id=order.id, version=order.version, ticket=TicketRef(order.ticket_id))
    stage(session, MODULE, Subjects.ORDER_CANCELLED, event)
