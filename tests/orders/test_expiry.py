"""Orders expire 15 minutes after creation: cancelled, their ticket released, as a DELETE would."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import msgspec
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import db
from app.bus import outbox
from app.bus.outbox import OutboxRecord
from app.clock import utcnow
from app.common.events import OrderStatus
from app.common.ids import new_id
from app.orders import expiry
from app.orders.models import Order, TicketReplica
from app.waiting import eventually
from tests.conftest import Api, AppFactory


async def reserved_order(api: Api) -> tuple[dict[str, object], dict[str, object], dict[str, str]]:
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    buyer = api.auth()
    order = await api.order(buyer, str(ticket["id"]))
    await api.settled()
    return ticket, order, buyer


async def make_due(api: Api, order_id: object, status: OrderStatus | None = None) -> None:
    values: dict[str, object] = {"expires_at": utcnow() - timedelta(seconds=1)}
    if status is not None:
        values["status"] = status
    async with api.sessions("orders")() as session:
        # Straight to the table, as time passing would: no version bump, no event.
        await session.execute(update(Order).where(Order.id == order_id).values(**values))
        await session.commit()


async def test_an_order_past_its_time_is_cancelled_and_its_ticket_released(api: Api) -> None:
    ticket, order, buyer = await reserved_order(api)
    published = (await api.counters())["published"]
    await make_due(api, order["id"])

    assert await expiry.expire_due_orders(api.sessions("orders")) == 1
    await api.settled()
    expired = (await api.http.get(f"/api/orders/{order['id']}", headers=buyer)).json()
    assert (expired["status"], expired["version"]) == ("cancelled", 1)
    released = (await api.http.get(f"/api/tickets/{ticket['id']}")).json()
    assert released["orderId"] is None
    # order:cancelled, and the ticket:updated it caused.
    assert (await api.counters())["published"] == published + 2
    assert await expiry.expire_due_orders(api.sessions("orders")) == 0, "once only"


async def test_orders_not_yet_due_complete_or_cancelled_are_left_alone(api: Api) -> None:
    _, waiting, _ = await reserved_order(api)
    _, complete, _ = await reserved_order(api)
    _, cancelled, buyer = await reserved_order(api)
    await make_due(api, complete["id"], OrderStatus.COMPLETE)
    assert (await api.http.delete(f"/api/orders/{cancelled['id']}", headers=buyer)).status_code == 204
    await make_due(api, cancelled["id"])
    await api.settled()
    published = (await api.counters())["published"]

    assert await expiry.expire_due_orders(api.sessions("orders")) == 0
    assert (await api.counters())["published"] == published
    async with api.sessions("orders")() as session:
        assert (await session.get(Order, waiting["id"])).status == OrderStatus.CREATED  # type: ignore[union-attr]


async def test_the_worker_expires_orders_by_itself(start_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Look again every few milliseconds rather than every RECHECK seconds.
    monkeypatch.setattr(expiry, "RECHECK", 0.01)
    async with start_app() as api:
        ticket, order, buyer = await reserved_order(api)
        await make_due(api, order["id"])

        async def released() -> bool:
            body = (await api.http.get(f"/api/tickets/{ticket['id']}")).json()
            return body["orderId"] is None

        await eventually(released, what="the expired order to release its ticket")
        shown = (await api.http.get(f"/api/orders/{order['id']}", headers=buyer)).json()
        assert shown["status"] == "cancelled"


async def test_workers_of_several_processes_cancel_each_order_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Fifty orders due, and four processes' workers (an engine each) expiring at once on one database.
    now = utcnow()
    async with sessions() as session:
        for n in range(50):
            session.add(TicketReplica(id=new_id(), title=f"t{n}", price=Decimal(10), version=0))
        await session.flush()
        for ticket in (await session.scalars(select(TicketReplica))).all():
            session.add(
                Order(
                    id=new_id(),
                    user_id=new_id(),
                    ticket_id=ticket.id,
                    status=OrderStatus.CREATED,
                    expires_at=now - timedelta(seconds=1),
                    created_at=now - timedelta(minutes=16),
                )
            )
        await session.commit()
    engines = [db.create_engine(database_url) for _ in range(4)]
    try:
        counts = await asyncio.gather(*(expiry.expire_due_orders(outbox.sessions(e)) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(counts) == 50
    async with sessions() as session:
        statuses = Counter((await session.scalars(select(Order.status))).all())
        cancellations = Counter(
            msgspec.json.decode(row.payload)["id"]
            for row in await session.scalars(select(OutboxRecord).where(OutboxRecord.subject == "order:cancelled"))
        )
    assert statuses == Counter({OrderStatus.CANCELLED: 50})
    assert len(cancellations) == 50 and set(cancellations.values()) == {1}, "one order:cancelled per order"
