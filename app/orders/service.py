"""The orders module's use cases.

Those a route or the expiry worker calls are each one transaction, and commit it. Those a
listener calls (``copy_ticket``, ``update_ticket_copy``) work in the listener's transaction: the
bus's listener binding opened the session, and it commits or rolls back; they never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import Outcome, Retry
from app.clock import utcnow
from app.common.errors import Conflict, Forbidden, NotFound
from app.common.events import OrderStatus
from app.common.ids import new_id
from app.common.versioning import Step, next_step, saved
from app.orders.events import stage_order_cancelled, stage_order_created
from app.orders.models import Order, TicketReplica

EXPIRATION = timedelta(minutes=15)


async def create_order(session: AsyncSession, user_id: str, ticket_id: str) -> tuple[Order, TicketReplica]:
    ticket = await session.get(TicketReplica, ticket_id)
    if ticket is None:
        raise NotFound("Ticket not found", field="ticketId")
    live = select(Order.id).where(Order.ticket_id == ticket_id, Order.status != OrderStatus.CANCELLED)
    if await session.scalar(live.limit(1)) is not None:
        raise Conflict("Ticket is already reserved", field="ticketId")
    now = utcnow()
    order = Order(
        id=new_id(),
        user_id=user_id,
        ticket_id=ticket_id,
        status=OrderStatus.CREATED,
        expires_at=now + EXPIRATION,
        created_at=now,
    )
    session.add(order)
    stage_order_created(session, order, ticket.price)
    try:
        await session.commit()  # the INSERT gives the order the version its event carries
    except IntegrityError:
        # Another order for this ticket was inserted since the check above: the unique
        # index on live orders let exactly one through, and it was not this one. The
        # rollback forgets the event staged with it.
        await session.rollback()
        raise Conflict("Ticket is already reserved", field="ticketId") from None
    return order, ticket


async def list_orders(
    session: AsyncSession, user_id: str, *, limit: int, after: str | None = None
) -> Sequence[tuple[Order, TicketReplica]]:
    """Up to ``limit`` of the user's orders in id order (creation order, ids being UUIDv7), after ``after``."""
    query = (
        select(Order, TicketReplica)
        .join(TicketReplica, TicketReplica.id == Order.ticket_id)
        .where(Order.user_id == user_id)
        .order_by(Order.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Order.id > after)
    return [(order, ticket) for order, ticket in await session.execute(query)]


async def get_order(session: AsyncSession, user_id: str, order_id: str) -> tuple[Order, TicketReplica]:
    order = await session.get(Order, order_id)
    if order is None:
        raise NotFound("Order not found")
    if order.user_id != user_id:
        raise Forbidden("This order belongs to someone else")
    ticket = await session.get(TicketReplica, order.ticket_id)
    assert ticket is not None, "an order is only ever created for a known ticket"
    return order, ticket


async def cancel_order(session: AsyncSession, user_id: str, order_id: str) -> Order:
    order, _ = await get_order(session, user_id, order_id)
    if order.status == OrderStatus.CANCELLED:
        return order  # already cancelled: nothing changes, nothing is published
    if order.status == OrderStatus.COMPLETE:
        raise Conflict("A completed order cannot be cancelled")
    order.status = OrderStatus.CANCELLED
    if not await saved(session):
        # Someone saved the order first; if that was a cancellation, this one is done too.
        order, _ = await get_order(session, user_id, order_id)
        if order.status == OrderStatus.CANCELLED:
            return order
        raise Conflict("The order was changed meanwhile; reload it and retry")
    stage_order_cancelled(session, order)
    await session.commit()
    return order


# An order in these states still holds its ticket, and so can expire.
EXPIRABLE = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT)


async def next_expiry(session: AsyncSession) -> datetime | None:
    """When the next live order expires, if any does."""
    query = select(func.min(Order.expires_at)).where(Order.status.in_(EXPIRABLE))
    earliest: datetime | None = await session.scalar(query)
    return earliest if earliest is None or earliest.tzinfo else earliest.replace(tzinfo=UTC)


async def expire_order(session: AsyncSession, order_id: str, now: datetime) -> bool:
    """Cancel one order whose time is up, as its owner's cancellation would; False if it no longer need be.

    Several processes run this worker on one database: the order is locked as it is read, and one
    another process is expiring right now is skipped (PostgreSQL; SQLite has one writer anyway).
    Optimistic locking settles the rest: a save that lost a race changes nothing.
    """
    order = await session.get(Order, order_id, with_for_update={"skip_locked": True})
    if order is None or order.status not in EXPIRABLE or order.expires_at > now:
        return False
    order.status = OrderStatus.CANCELLED
    if not await saved(session):
        return False  # cancelled (or paid) by someone else meanwhile: their change stands
    stage_order_cancelled(session, order)
    await session.commit()
    return True


async def expired_orders(session: AsyncSession, now: datetime, limit: int = 100) -> list[str]:
    query = select(Order.id).where(Order.status.in_(EXPIRABLE), Order.expires_at <= now).order_by(Order.expires_at)
    return list((await session.scalars(query.limit(limit))).all())


async def copy_ticket(session: AsyncSession, ticket_id: str, title: str, price: Decimal, version: int) -> Outcome:
    """ticket:created: start this module's copy of the ticket, at the version it was created with.

    A copy made meanwhile by a concurrent delivery of the same event makes the insert fail: the
    listener's transaction is then rolled back by its owner, and the next attempt finds the copy.
    """
    known = await session.get(TicketReplica, ticket_id)
    if next_step("ticket", None if known is None else known.version, version) is Step.DUPLICATE:
        return Outcome.DUPLICATE
    session.add(TicketReplica(id=ticket_id, title=title, price=price, version=version))
    await session.flush()
    return Outcome.APPLIED


async def copy_ticket_in_batch(
    session: AsyncSession, ticket_id: str, title: str, price: Decimal, version: int
) -> Outcome:
    """:func:`copy_ticket` without the flush: the whole batch's copies go in one INSERT.

    A duplicate makes that INSERT fail, which sends the batch back one event at a time.
    """
    next_step("ticket", None, version)
    session.add(TicketReplica(id=ticket_id, title=title, price=price, version=version))
    return Outcome.APPLIED


async def update_ticket_copy(
    session: AsyncSession, ticket_id: str, title: str, price: Decimal, version: int
) -> Outcome:
    """ticket:updated: apply the next version of the ticket to this module's copy."""
    replica = await session.get(TicketReplica, ticket_id)
    if replica is None:
        raise Retry(f"ticket {ticket_id} has no copy here yet: waiting for ticket:created")
    if next_step("ticket", replica.version, version) is Step.DUPLICATE:
        return Outcome.DUPLICATE
    # The UPDATE says WHERE version = <stored>: a concurrent writer makes it fail, and retry.
    replica.title, replica.price, replica.version = title, price, version
    return Outcome.APPLIED
