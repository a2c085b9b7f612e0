"""Optimistic locking on the models (the course's model tests, with SQLAlchemy's version_id_col)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from app.common.events import OrderStatus
from app.tickets.models import OrderReplica, Ticket


async def test_a_stale_copy_of_a_ticket_cannot_be_saved(sessions: async_sessionmaker[AsyncSession]) -> None:
    ticket_id = str(uuid.uuid4())
    async with sessions() as session:
        session.add(Ticket(id=ticket_id, title="concert", price=Decimal(5), user_id="u"))
        await session.commit()

    async with sessions() as first, sessions() as second:
        mine = await first.get(Ticket, ticket_id)
        theirs = await second.get(Ticket, ticket_id)
        assert mine is not None
        assert theirs is not None
        mine.price = Decimal(10)
        theirs.price = Decimal(15)
        await first.commit()
        with pytest.raises(StaleDataError):
            await second.commit()

    async with sessions() as session:
        saved = await session.get(Ticket, ticket_id)
        assert saved is not None
        assert (saved.price, saved.version) == (Decimal(10), 1)


async def test_every_save_increments_the_version_by_one(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        ticket = Ticket(id=str(uuid.uuid4()), title="concert", price=Decimal(20), user_id="u")
        session.add(ticket)
        await session.commit()
        assert ticket.version == 0
        for expected, price in enumerate((21, 22, 23), start=1):
            ticket.price = Decimal(price)
            await session.commit()
            assert ticket.version == expected


async def test_prices_are_stored_exactly(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        ticket = Ticket(id=str(uuid.uuid4()), title="t", price=Decimal("999999.99"), user_id="u")
        session.add(ticket)
        await session.commit()
    async with sessions() as session:
        stored = await session.get(Ticket, ticket.id)
        assert stored is not None
        assert stored.price == Decimal("999999.99")
        assert str(stored.price) == "999999.99"


async def test_an_order_replica_saves_only_over_the_version_it_read(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    order_id = str(uuid.uuid4())
    async with sessions() as session:
        session.add(OrderReplica(id=order_id, ticket_id="t", status=OrderStatus.CREATED, version=0))
        await session.commit()
    async with sessions() as first, sessions() as second:
        mine = await first.get(OrderReplica, order_id)
        theirs = await second.get(OrderReplica, order_id)
        assert mine is not None
        assert theirs is not None
        mine.status, mine.version = OrderStatus.CANCELLED, 1
        theirs.status, theirs.version = OrderStatus.CANCELLED, 1
        await first.commit()
        with pytest.raises(StaleDataError):
            await second.commit()
