"""Optimistic locking and the one-live-order rule, enforced by the database."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from app.clock import utcnow
from app.common.events import OrderStatus
from app.orders.models import Order, TicketReplica


def new_order(ticket_id: str, status: OrderStatus = OrderStatus.CREATED) -> Order:
    return Order(
        id=str(uuid.uuid4()),
        user_id="u",
        ticket_id=ticket_id,
        status=status,
        expires_at=utcnow() + timedelta(minutes=15),
    )


async def test_a_stale_copy_of_an_order_cannot_be_saved(sessions: async_sessionmaker[AsyncSession]) -> None:
    order = new_order("t")
    async with sessions() as session:
        session.add(order)
        await session.commit()
        assert order.version == 0
    async with sessions() as first, sessions() as second:
        mine = await first.get(Order, order.id)
        theirs = await second.get(Order, order.id)
        assert mine is not None
        assert theirs is not None
        mine.status = OrderStatus.CANCELLED
        theirs.status = OrderStatus.AWAITING_PAYMENT
        await first.commit()
        assert mine.version == 1
        with pytest.raises(StaleDataError):
            await second.commit()


async def test_a_replica_keeps_the_version_it_is_given_and_checks_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        session.add(TicketReplica(id="t1", title="a", price=Decimal(1), version=7))
        await session.commit()
    async with sessions() as first, sessions() as second:
        mine = await first.get(TicketReplica, "t1")
        theirs = await second.get(TicketReplica, "t1")
        assert mine is not None
        assert theirs is not None
        mine.title, mine.version = "b", 8
        theirs.title, theirs.version = "c", 8
        await first.commit()
        with pytest.raises(StaleDataError):
            await second.commit()
    async with sessions() as session:
        stored = await session.get(TicketReplica, "t1")
        assert stored is not None
        assert (stored.title, stored.version) == ("b", 8)


async def test_the_database_allows_one_live_order_per_ticket(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        session.add(new_order("t", OrderStatus.CANCELLED))
        session.add(new_order("t", OrderStatus.CANCELLED))
        session.add(new_order("t"))
        await session.commit()
    async with sessions() as session:
        session.add(new_order("t", OrderStatus.AWAITING_PAYMENT))
        with pytest.raises(IntegrityError):
            await session.commit()
