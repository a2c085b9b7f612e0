"""The orders module's listeners, one event at a time (the course's listener unit tests, and more)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Outcome, Retry
from app.common.events import TicketCreated, TicketUpdated
from app.orders.listeners import listeners
from app.orders.models import TicketReplica
from tests.conftest import deliver, deliveries

on_ticket_created, on_ticket_updated, _signed_out = listeners
USER = str(uuid.uuid4())


def ticket_created(ticket_id: str, title: str = "concert", price: str = "20") -> TicketCreated:
    return TicketCreated(id=ticket_id, version=0, title=title, price=Decimal(price), user_id=USER)


def ticket_updated(ticket_id: str, version: int, title: str = "new concert", price: str = "999.99") -> TicketUpdated:
    return TicketUpdated(id=ticket_id, version=version, title=title, price=Decimal(price), user_id=USER, order_id=None)


async def replica(sessions: async_sessionmaker[AsyncSession], ticket_id: str) -> TicketReplica | None:
    async with sessions() as session:
        return await session.get(TicketReplica, ticket_id)


def test_the_listeners_join_the_orders_service_group() -> None:
    assert [(listener.subject, listener.group) for listener in listeners] == [
        ("ticket:created", "orders-service"),
        ("ticket:updated", "orders-service"),
        ("user:signed-out", "orders-service"),
    ]


async def test_ticket_created_creates_and_saves_a_ticket_and_acks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket_id = str(uuid.uuid4())
    assert await deliver(on_ticket_created, ticket_created(ticket_id, price="10.05"), sessions) is Outcome.APPLIED
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.id, copy.title, copy.price, copy.version) == (ticket_id, "concert", Decimal("10.05"), 0)


async def test_ticket_updated_finds_updates_and_saves_the_ticket_and_acks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket_id = str(uuid.uuid4())
    await deliver(on_ticket_created, ticket_created(ticket_id), sessions)
    assert await deliver(on_ticket_updated, ticket_updated(ticket_id, 1), sessions) is Outcome.APPLIED
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.title, copy.price, copy.version) == ("new concert", Decimal("999.99"), 1)


async def test_ticket_updated_with_a_skipped_version_is_not_acked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket_id = str(uuid.uuid4())
    await deliver(on_ticket_created, ticket_created(ticket_id), sessions)
    with pytest.raises(Retry, match="version 2 is early"):
        await deliver(on_ticket_updated, ticket_updated(ticket_id, 2), sessions)
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.title, copy.version) == ("concert", 0), "nothing applied"
    # Once version 1 lands, version 2 applies.
    await deliver(on_ticket_updated, ticket_updated(ticket_id, 1, title="v1"), sessions)
    assert await deliver(on_ticket_updated, ticket_updated(ticket_id, 2, title="v2"), sessions) is Outcome.APPLIED
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.title, copy.version) == ("v2", 2)


async def test_ticket_updated_before_ticket_created_is_not_acked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticket_id = str(uuid.uuid4())
    with pytest.raises(Retry, match="waiting for ticket:created"):
        await deliver(on_ticket_updated, ticket_updated(ticket_id, 1), sessions)
    assert await replica(sessions, ticket_id) is None


async def test_duplicates_are_acked_and_change_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    ticket_id = str(uuid.uuid4())
    await deliver(on_ticket_created, ticket_created(ticket_id), sessions)
    await deliver(on_ticket_updated, ticket_updated(ticket_id, 1, title="v1"), sessions)
    await deliver(on_ticket_updated, ticket_updated(ticket_id, 2, title="v2"), sessions)
    # An old version and a repeated creation arrive late.
    assert await deliver(on_ticket_updated, ticket_updated(ticket_id, 1, title="v1"), sessions) is Outcome.DUPLICATE
    assert await deliver(on_ticket_created, ticket_created(ticket_id), sessions) is Outcome.DUPLICATE
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.title, copy.version) == ("v2", 2)


async def test_a_batch_applies_its_events_in_one_go(sessions: async_sessionmaker[AsyncSession]) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    created = on_ticket_created.bind("orders", sessions)
    assert await created.batch(deliveries(on_ticket_created, ticket_created(first), ticket_created(second))) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    updated = on_ticket_updated.bind("orders", sessions)
    batch = deliveries(
        on_ticket_updated,
        ticket_updated(first, 1, title="v1"),
        ticket_updated(first, 2, title="v2"),
        ticket_updated(first, 1, title="v1"),
    )
    assert await updated.batch(batch) == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE]
    copy = await replica(sessions, first)
    assert copy is not None
    assert (copy.title, copy.version) == ("v2", 2)


async def test_a_batch_with_an_early_update_is_undone_as_a_whole(sessions: async_sessionmaker[AsyncSession]) -> None:
    ticket_id = str(uuid.uuid4())
    await deliver(on_ticket_created, ticket_created(ticket_id), sessions)
    batch = deliveries(on_ticket_updated, ticket_updated(ticket_id, 1, title="v1"), ticket_updated(ticket_id, 3))
    with pytest.raises(Retry):
        await on_ticket_updated.bind("orders", sessions).batch(batch)
    copy = await replica(sessions, ticket_id)
    assert copy is not None
    assert (copy.title, copy.version) == ("concert", 0), "version 1, applied first in the batch, was undone"


async def test_a_batch_with_a_repeated_creation_is_undone_as_a_whole(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    known, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    await deliver(on_ticket_created, ticket_created(known), sessions)
    # The batch's copies go in one INSERT, which the copy already there makes fail.
    batch = deliveries(on_ticket_created, ticket_created(fresh), ticket_created(known))
    with pytest.raises(IntegrityError):
        await on_ticket_created.bind("orders", sessions).batch(batch)
    assert await replica(sessions, fresh) is None
