"""Orders expire 15 minutes after creation: cancelled, their ticket released, as a DELETE would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app.clock import utcnow
from app.common.events import OrderStatus
from app.orders import expiry
from app.orders.models import Order
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
