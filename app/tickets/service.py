"""The tickets module's use cases.

Those a route calls (create, update) are each one transaction, and commit it. Those a listener
calls (``hold_for_order``, ``release_for_order``) work in the listener's transaction: the bus's
listener binding opened the session, and it commits or rolls back; they never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import Outcome, Retry
from app.common.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from app.common.events import OrderStatus
from app.common.http import if_match_allows
from app.common.ids import new_id
from app.common.versioning import Step, next_step, saved
from app.tickets.events import stage_ticket_created, stage_ticket_updated
from app.tickets.models import OrderReplica, Ticket


async def create_ticket(session: AsyncSession, user_id: str, title: str, price: Decimal) -> Ticket:
    ticket = Ticket(id=new_id(), title=title, price=price, user_id=user_id)
    session.add(ticket)
    stage_ticket_created(session, ticket)
    await session.commit()  # the INSERT gives the ticket the version its event carries
    return ticket


async def list_tickets(
    session: AsyncSession, *, limit: int, after: str | None = None, available: bool | None = None
) -> Sequence[Ticket]:
    """Up to ``limit`` tickets in id order (creation order, ids being UUIDv7), from just after ``after``.

    ``available``: only tickets no order holds (True), only held ones (False), or all (None).
    """
    query = select(Ticket).order_by(Ticket.id).limit(limit)
    if after is not None:
        query = query.where(Ticket.id > after)
    if available is not None:
        query = query.where(Ticket.order_id.is_(None) if available else Ticket.order_id.is_not(None))
    return (await session.scalars(query)).all()


async def get_ticket(session: AsyncSession, ticket_id: str) -> Ticket:
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound("Ticket not found")
    return ticket


async def update_ticket(
    session: AsyncSession,
    *,
    ticket_id: str,
    user_id: str,
    title: str,
    price: Decimal,
    if_match: str | None = None,
) -> Ticket:
    ticket = await get_ticket(session, ticket_id)
    if ticket.user_id != user_id:
        raise Forbidden("Only the owner can edit this ticket")
    if if_match is not None and not if_match_allows(if_match, ticket.version):
        raise PreconditionFailed(f'If-Match {if_match} does not match the current version "{ticket.version}"')
    if ticket.order_id is not None:
        raise Conflict("Cannot edit a reserved ticket")
    ticket.title, ticket.price = title, price
    if not session.is_modified(ticket):
        return ticket  # nothing to save, so no new version and no event
    if not await saved(session):
        raise Conflict("The ticket was changed by someone else meanwhile; reload it and retry")
    stage_ticket_updated(session, ticket)
    await session.commit()
    return ticket


async def hold_for_order(session: AsyncSession, order_id: str, ticket_id: str, version: int) -> Outcome:
    """order:created: the ticket is now held by the order, unless that order is already known."""
    known = await session.get(OrderReplica, order_id)
    if next_step("order", None if known is None else known.version, version) is Step.DUPLICATE:
        return Outcome.DUPLICATE
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise Retry(f"ticket {ticket_id} is not known here yet")
    if ticket.order_id is not None:
        # Only one order at a time is live for a ticket, so the holder's cancellation must
        # be on its way: wait for it rather than lose track of either order.
        raise Retry(f"ticket {ticket_id} is held by order {ticket.order_id}, awaiting its cancellation")
    session.add(OrderReplica(id=order_id, ticket_id=ticket_id, status=OrderStatus.CREATED, version=version))
    ticket.order_id = order_id
    await session.flush()  # bumps the ticket's version, which ticket:updated must carry
    stage_ticket_updated(session, ticket)
    return Outcome.APPLIED


async def release_for_order(session: AsyncSession, order_id: str, ticket_id: str, version: int) -> Outcome:
    """order:cancelled: the order lets go of its ticket."""
    known = await session.get(OrderReplica, order_id)
    if known is None:
        # The cancellation overtook the creation. Keep it, so that the creation, when it
        # comes, is recognised as stale instead of reserving the ticket for a dead order.
        tombstone = OrderReplica(id=order_id, ticket_id=ticket_id, status=OrderStatus.CANCELLED, version=version)
        session.add(tombstone)
        return Outcome.APPLIED
    if next_step("order", known.version, version) is Step.DUPLICATE:
        return Outcome.DUPLICATE
    known.status, known.version = OrderStatus.CANCELLED, version
    ticket = await session.get(Ticket, known.ticket_id)
    if ticket is not None and ticket.order_id == order_id:
        ticket.order_id = None
        await session.flush()
        stage_ticket_updated(session, ticket)
    return Outcome.APPLIED
