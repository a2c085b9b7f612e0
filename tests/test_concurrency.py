"""Real concurrency: many requests at once, racing for the same rows in a real database."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select

from app.orders.models import Order, TicketReplica
from tests.conftest import DEPLOYMENTS, Api

pytestmark = pytest.mark.parametrize("deployment", DEPLOYMENTS, indirect=True)


async def test_many_simultaneous_orders_for_one_ticket_give_exactly_one_201(api: Api) -> None:
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    buyers = [api.auth() for _ in range(40)]
    responses = await asyncio.gather(
        *(api.http.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer) for buyer in buyers)
    )
    assert Counter(response.status_code for response in responses) == {201: 1, 409: 39}
    [winner] = [response.json() for response in responses if response.status_code == 201]
    async with api.sessions("orders")() as session:
        live = (await session.scalars(select(Order).where(Order.status != "cancelled"))).all()
    assert [order.id for order in live] == [winner["id"]]
    await api.settled()
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json()["orderId"] == winner["id"]


async def test_many_simultaneous_edits_lose_no_update(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    url = f"/api/tickets/{ticket['id']}"
    responses = await asyncio.gather(
        *(api.http.put(url, json={"title": f"edit-{n}", "price": 10 + n}, headers=owner) for n in range(30))
    )
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, 409}, statuses
    winners = sorted((r.json() for r in responses if r.status_code == 200), key=lambda t: t["version"])
    # Every successful edit made exactly one new version: none overwrote another unseen.
    assert [w["version"] for w in winners] == list(range(1, len(winners) + 1))
    final = (await api.http.get(url)).json()
    assert final == winners[-1]
    await api.settled()
    async with api.sessions("orders")() as session:
        copy = await session.get(TicketReplica, ticket["id"])
    assert copy is not None
    assert (copy.title, float(copy.price), copy.version) == (final["title"], final["price"], final["version"])


async def test_simultaneous_edits_from_the_same_version_let_exactly_one_win(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    url = f"/api/tickets/{ticket['id']}"
    headers = {**owner, "If-Match": '"0"'}
    responses = await asyncio.gather(
        *(api.http.put(url, json={"title": f"edit-{n}", "price": 5}, headers=headers) for n in range(20))
    )
    statuses = Counter(response.status_code for response in responses)
    # Those that read version 0 race at the database (409); those that read later fail the precondition (412).
    assert statuses[200] == 1
    assert set(statuses) <= {200, 409, 412}
    assert (await api.http.get(url)).json()["version"] == 1


async def test_orders_for_different_tickets_do_not_block_each_other(api: Api) -> None:
    tickets = [await api.create_ticket(api.auth(), title=f"t{n}") for n in range(15)]
    await api.settled()
    responses = await asyncio.gather(
        *(api.http.post("/api/orders", json={"ticketId": t["id"]}, headers=api.auth()) for t in tickets)
    )
    assert [response.status_code for response in responses] == [201] * 15
    await api.settled()
    listed = (await api.http.get("/api/tickets")).json()
    assert all(ticket["orderId"] for ticket in listed)


async def test_racing_cancellations_of_one_order_publish_one_event(api: Api) -> None:
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    buyer = api.auth()
    order = await api.order(buyer, ticket["id"])
    await api.settled()
    published = (await api.counters())["published"]
    responses = await asyncio.gather(*(api.http.delete(f"/api/orders/{order['id']}", headers=buyer) for _ in range(10)))
    assert [response.status_code for response in responses] == [204] * 10
    await api.settled()
    # One order:cancelled, and the ticket:updated it caused.
    assert (await api.counters())["published"] == published + 2
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json()["orderId"] is None
