"""The tickets module's listeners, one event at a time (the course's listener unit tests, and more)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Outcome, Retry
from app.clock import utcnow
from app.common.events import OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketRef
from app.tickets import service
from app.tickets.listeners import listeners
from app.tickets.models import Ticket
from tests.conftest import deliver, deliveries, staged_events

on_order_created, on_order_cancelled, _signed_out = listeners


def created(order_id: str, ticket_id: str) -> OrderCreated:
    return OrderCreated(
        id=order_id,
        version=0,
        status=OrderStatus.CREATED,
        user_id=str(uuid.uuid4()),
        expires_at=utcnow() + timedelta(minutes=15),
        ticket=OrderTicket(id=ticket_id, price=Decimal("99")),
    )


def cancelled(order_id: str, ticket_id: str) -> OrderCancelled:
    return OrderCancelled(id=order_id, version=1, ticket=TicketRef(ticket_id))


async def new_ticket(sessions: async_sessionmaker[AsyncSession]) -> Ticket:
    async with sessions() as session:
        return await service.create_ticket(session, str(uuid.uuid4()), "concert", Decimal("20.00"))


async def fetch(sessions: async_sessionmaker[AsyncSession], ticket_id: str) -> Ticket:
    async with sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


def test_the_listeners_join_the_tickets_service_group() -> None:
    assert [(listener.subject, listener.group) for listener in listeners] == [
        ("order:created", "tickets-service"),
        ("order:cancelled", "tickets-service"),
        ("user:signed-out", "tickets-service"),
    ]


async def test_order_created_sets_the_order_id_of_the_ticket_and_acks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    order_id = str(uuid.uuid4())
    assert await deliver(on_order_created, created(order_id, ticket.id), sessions) is Outcome.APPLIED
    reserved = await fetch(sessions, ticket.id)
    assert reserved.order_id == order_id
    assert reserved.version == ticket.version + 1


async def test_order_created_publishes_ticket_updated_with_the_order_id(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    order_id = str(uuid.uuid4())
    await deliver(on_order_created, created(order_id, ticket.id), sessions)
    subject, payload = (await staged_events(sessions))[-1]
    assert subject == "ticket:updated"
    assert payload == {
        "id": ticket.id,
        "version": 1,
        "title": "concert",
        "price": 20,
        "userId": ticket.user_id,
        "orderId": order_id,
    }


async def test_order_cancelled_releases_the_ticket_publishes_and_acks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    order_id = str(uuid.uuid4())
    await deliver(on_order_created, created(order_id, ticket.id), sessions)
    assert await deliver(on_order_cancelled, cancelled(order_id, ticket.id), sessions) is Outcome.APPLIED
    released = await fetch(sessions, ticket.id)
    assert (released.order_id, released.version) == (None, 2)
    subject, payload = (await staged_events(sessions))[-1]
    assert (subject, payload["orderId"], payload["version"]) == ("ticket:updated", None, 2)


async def test_a_duplicate_order_created_is_acked_without_a_second_change(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    event = created(str(uuid.uuid4()), ticket.id)
    await deliver(on_order_created, event, sessions)
    before = await staged_events(sessions)
    assert await deliver(on_order_created, event, sessions) is Outcome.DUPLICATE
    assert (await fetch(sessions, ticket.id)).version == 1
    assert await staged_events(sessions) == before, "nothing published for a duplicate"


async def test_a_duplicate_order_cancelled_is_acked_without_a_second_change(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    order_id = str(uuid.uuid4())
    await deliver(on_order_created, created(order_id, ticket.id), sessions)
    await deliver(on_order_cancelled, cancelled(order_id, ticket.id), sessions)
    assert await deliver(on_order_cancelled, cancelled(order_id, ticket.id), sessions) is Outcome.DUPLICATE
    assert (await fetch(sessions, ticket.id)).version == 2


async def test_a_cancellation_that_overtakes_its_creation_keeps_the_ticket_free(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    order_id = str(uuid.uuid4())
    assert await deliver(on_order_cancelled, cancelled(order_id, ticket.id), sessions) is Outcome.APPLIED
    # The creation arrives late: it is recognised as stale, so the ticket is not held by a dead order.
    assert await deliver(on_order_created, created(order_id, ticket.id), sessions) is Outcome.DUPLICATE
    free = await fetch(sessions, ticket.id)
    assert (free.order_id, free.version) == (None, 0)


async def test_a_new_order_waits_while_the_ticket_is_held_by_another(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await deliver(on_order_created, created(first, ticket.id), sessions)
    # The second order's creation came before the first order's cancellation: not acked.
    with pytest.raises(Retry, match="held by order"):
        await deliver(on_order_created, created(second, ticket.id), sessions)
    await deliver(on_order_cancelled, cancelled(first, ticket.id), sessions)
    assert await deliver(on_order_created, created(second, ticket.id), sessions) is Outcome.APPLIED
    assert (await fetch(sessions, ticket.id)).order_id == second


async def test_an_order_for_a_ticket_not_known_yet_is_not_acked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(Retry, match="not known"):
        await deliver(on_order_created, created(str(uuid.uuid4()), str(uuid.uuid4())), sessions)


async def test_a_batch_holds_every_ticket_and_publishes_each_update(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second = await new_ticket(sessions), await new_ticket(sessions)
    orders = {first.id: str(uuid.uuid4()), second.id: str(uuid.uuid4())}
    batch = deliveries(on_order_created, *(created(order, ticket) for ticket, order in orders.items()))
    assert await on_order_created.bind("tickets", sessions).batch(batch) == [Outcome.APPLIED, Outcome.APPLIED]
    for ticket_id, order_id in orders.items():
        assert (await fetch(sessions, ticket_id)).order_id == order_id
    updates = [payload for subject, payload in await staged_events(sessions) if subject == "ticket:updated"]
    assert sorted((update["id"], update["orderId"], update["version"]) for update in updates) == sorted(
        (ticket_id, order_id, 1) for ticket_id, order_id in orders.items()
    )


async def test_a_batch_that_raises_holds_nothing_and_publishes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket = await new_ticket(sessions)
    before = await staged_events(sessions)
    # The second order's ticket is not known here yet: Retry, and the first hold is undone with it.
    batch = deliveries(on_order_created, created(str(uuid.uuid4()), ticket.id), created(str(uuid.uuid4()), "nope"))
    with pytest.raises(Retry):
        await on_order_created.bind("tickets", sessions).batch(batch)
    untouched = await fetch(sessions, ticket.id)
    assert (untouched.order_id, untouched.version) == (None, 0)
    assert await staged_events(sessions) == before
