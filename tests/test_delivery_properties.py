"""Property: whatever a bus does to a valid history, the listeners end where in-order delivery ends.

Hypothesis writes the histories (a ticket's edits; orders for tickets, each cancelled but maybe the
last) and how they are delivered: in any order, some events twice, some lost until a redelivery
that comes after everything else. The real listeners hear them through the real in-memory bus, on
a real SQLite database, and must end in the state SPEC.md names, with no dead letter.

Retries here back off for a minute, and the test waits ten seconds at most: an early event gets
through only because the bus wakes it when its record moves on, never because it sat out a backoff.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import db
from app.bus import DeliveryPolicy, Message, outbox
from app.bus.memory import MemoryBus
from app.bus.outbox import OutboxBase, OutboxRecord, encode
from app.clock import utcnow
from app.common.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    OrderTicket,
    TicketCreated,
    TicketRef,
    TicketUpdated,
)
from app.common.module import Listener
from app.orders.listeners import listeners as orders_listeners
from app.orders.models import Base as OrdersBase
from app.orders.models import TicketReplica
from app.tickets import service as tickets_service
from app.tickets.listeners import listeners as tickets_listeners
from app.tickets.models import Base as TicketsBase
from app.tickets.models import OrderReplica, Ticket
from app.waiting import eventually

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("TICKETING_PROPERTY_EXAMPLES", "300"))
PATIENT = DeliveryPolicy(backoff=60.0, backoff_max=60.0)
USER = str(uuid.uuid4())
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One database for every example (each uses ids of its own): set up once, per test.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Copy:
    """One delivery of one event: which event, and whether it comes only after everything else."""

    event: int
    late: bool


@st.composite
def schedules(draw: st.DrawFn, count: int) -> list[int]:
    """The order the bus delivers ``count`` events in: shuffled, some twice, some lost until the end."""
    copies = [Copy(index, draw(st.booleans())) for index in range(count) for _ in range(draw(st.integers(1, 2)))]
    shuffled = draw(st.permutations(copies))
    return [copy.event for copy in shuffled if not copy.late] + [copy.event for copy in shuffled if copy.late]


@asynccontextmanager
async def delivered_by_bus(
    url: str, listeners: Sequence[Listener[Any]], module: str
) -> AsyncIterator[tuple[MemoryBus, async_sessionmaker[AsyncSession]]]:
    engine = db.create_engine(url)
    async with engine.begin() as connection:
        for metadata in (OutboxBase.metadata, TicketsBase.metadata, OrdersBase.metadata):
            await connection.run_sync(metadata.create_all)
    sessions = outbox.sessions(engine)
    bus = MemoryBus(PATIENT)
    await bus.connect()
    try:
        for listener in listeners:
            await bus.subscribe(listener.subject, listener.group, listener.bind(module, sessions))
        yield bus, sessions
    finally:
        await bus.close()
        await engine.dispose()


async def deliver(bus: MemoryBus, events: Sequence[tuple[str, Event]], order: Sequence[int]) -> None:
    """Each copy as the bus would hand it over: the same event id for every copy of an event."""
    messages = [
        Message(id=str(uuid.uuid4()), subject=subject, data=encode(event), occurred_at=utcnow(), source="tests")
        for subject, event in events
    ]
    await bus.publish([messages[index] for index in order])
    await eventually(lambda: bus.pending == 0, timeout=10, what="every delivery settled, by wake-ups alone")
    assert await bus.dead_letters() == []


@st.composite
def ticket_histories(draw: st.DrawFn) -> list[tuple[str, Event]]:
    """What the tickets module publishes about one ticket: created at version 0, then edited."""
    ticket_id = str(uuid.uuid4())
    edits = draw(st.integers(0, 6))
    values = draw(
        st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), st.integers(1, 99_999)), min_size=edits + 1)
    )
    title, cents = values[0]
    history: list[tuple[str, Event]] = [
        (
            "ticket:created",
            TicketCreated(id=ticket_id, version=0, title=title, price=Decimal(cents) / 100, user_id=USER),
        )
    ]
    for version, (title, cents) in enumerate(values[1 : edits + 1], start=1):
        updated = TicketUpdated(
            id=ticket_id, version=version, title=title, price=Decimal(cents) / 100, user_id=USER, order_id=None
        )
        history.append(("ticket:updated", updated))
    return history


@SETTINGS
@given(data=st.data())
async def test_the_orders_copy_ends_at_the_tickets_last_version_whatever_the_delivery(
    data: st.DataObject, tmp_path: Path
) -> None:
    histories = data.draw(st.lists(ticket_histories(), min_size=1, max_size=2))
    events = [event for history in histories for event in history]
    order = data.draw(schedules(len(events)))
    async with delivered_by_bus(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}", orders_listeners, "orders") as (
        bus,
        sessions,
    ):
        await deliver(bus, events, order)
        async with sessions() as session:
            for history in histories:
                _, last = history[-1]
                assert isinstance(last, TicketCreated | TicketUpdated)
                copy = await session.get(TicketReplica, last.id)
                assert copy is not None
                assert (copy.title, copy.price, copy.version) == (last.title, last.price, last.version)


@st.composite
def order_histories(draw: st.DrawFn, ticket_id: str) -> list[tuple[str, Event]]:
    """What the orders module publishes for one ticket: orders one after another, each cancelled but maybe the last."""
    count = draw(st.integers(1, 4))
    last_live = draw(st.booleans())
    history: list[tuple[str, Event]] = []
    for index in range(count):
        order_id = str(uuid.uuid4())
        created = OrderCreated(
            id=order_id,
            version=0,
            status=OrderStatus.CREATED,
            user_id=USER,
            expires_at=utcnow(),
            ticket=OrderTicket(id=ticket_id, price=Decimal(20)),
        )
        history.append(("order:created", created))
        if index < count - 1 or not last_live:
            history.append(("order:cancelled", OrderCancelled(id=order_id, version=1, ticket=TicketRef(ticket_id))))
    return history


@SETTINGS
@given(data=st.data())
async def test_each_ticket_ends_held_by_its_one_live_order_whatever_the_delivery(
    data: st.DataObject, tmp_path: Path
) -> None:
    async with delivered_by_bus(f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}", tickets_listeners, "tickets") as (
        bus,
        sessions,
    ):
        tickets = []
        for _ in range(data.draw(st.integers(1, 2))):
            async with sessions() as session:
                tickets.append((await tickets_service.create_ticket(session, USER, "concert", Decimal(20))).id)
        histories = [data.draw(order_histories(ticket_id)) for ticket_id in tickets]
        events = [event for history in histories for event in history]
        await deliver(bus, events, data.draw(schedules(len(events))))

        async with sessions() as session:
            for ticket_id, history in zip(tickets, histories, strict=True):
                cancelled = {event.id for subject, event in history if subject == "order:cancelled"}
                live = [
                    event.id for subject, event in history if subject == "order:created" and event.id not in cancelled
                ]
                ticket = await session.get(Ticket, ticket_id)
                assert ticket is not None
                assert ticket.order_id == (live[0] if live else None)
                known = {
                    order.id: order.status
                    for order in await session.scalars(select(OrderReplica).where(OrderReplica.ticket_id == ticket_id))
                }
                assert known == {event.id: "cancelled" if event.id in cancelled else "created" for _, event in history}
                # Every save of the ticket published its version, one after another, the last one included.
                staged = await session.scalars(select(OutboxRecord).where(OutboxRecord.subject == "ticket:updated"))
                versions = sorted(
                    payload["version"]
                    for payload in (msgspec.json.decode(row.payload) for row in staged)
                    if payload["id"] == ticket_id
                )
                assert versions == list(range(1, ticket.version + 1))
