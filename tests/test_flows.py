"""End to end over HTTP, with the events really flowing between the modules."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.orders.models import TicketReplica
from tests.conftest import DEPLOYMENTS, Api
from tests.deployments import SplitApi

pytestmark = pytest.mark.parametrize("deployment", DEPLOYMENTS, indirect=True)


async def replica(sessions: async_sessionmaker[AsyncSession], ticket_id: str) -> dict[str, Any] | None:
    async with sessions() as session:
        copy = await session.get(TicketReplica, ticket_id)
        if copy is None:
            return None
        return {"title": copy.title, "price": float(copy.price), "version": copy.version}


async def test_the_seeds_manual_test_logs_the_seeds_lines_in_order(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    owner = api.auth()
    with caplog.at_level(logging.INFO, logger="ticketing"):
        ticket = await api.create_ticket(owner)
        await api.settled()
        response = await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "new", "price": 30}, headers=owner)
        assert response.status_code == 200
        await api.settled()
    expected = [
        "[tickets] Event published to subject ticket:created",
        "[orders] Message received: ticket:created / orders-service",
        "[tickets] Event published to subject ticket:updated",
        "[orders] Message received: ticket:updated / orders-service",
    ]

    def seed_lines(lines: list[str]) -> list[str]:
        return [line for line in lines if "Event published" in line or "Message received" in line]

    if isinstance(api, SplitApi):
        # Two processes, two logs: each reads like its half of the seed's.
        assert seed_lines(api.processes["tickets"].lines) == expected[0::2]
        assert seed_lines(api.processes["orders"].lines) == expected[1::2]
        assert "[tickets] Connected to NATS" in api.processes["tickets"].lines
        assert "[orders] Connected to NATS" in api.processes["orders"].lines
    else:
        assert seed_lines([record.getMessage() for record in caplog.records]) == expected


async def test_a_ticket_through_its_whole_life(api: Api) -> None:
    owner, buyer = api.auth(), api.auth()
    sessions = api.sessions("orders")

    ticket = await api.create_ticket(owner, title="concert", price=20)
    await api.settled()
    assert await replica(sessions, ticket["id"]) == {"title": "concert", "price": 20, "version": 0}

    url = f"/api/tickets/{ticket['id']}"
    assert (await api.http.put(url, json={"title": "concert!", "price": 25}, headers=owner)).status_code == 200
    await api.settled()
    assert await replica(sessions, ticket["id"]) == {"title": "concert!", "price": 25, "version": 1}

    order = await api.order(buyer, ticket["id"])
    await api.settled()
    reserved = (await api.http.get(url)).json()
    assert (reserved["orderId"], reserved["version"]) == (order["id"], 2)
    # The reservation bumped the ticket; ticket:updated carried it to the replica.
    assert await replica(sessions, ticket["id"]) == {"title": "concert!", "price": 25, "version": 2}

    refused = await api.http.put(url, json={"title": "sneaky", "price": 1}, headers=owner)
    assert refused.status_code == 409

    assert (await api.http.delete(f"/api/orders/{order['id']}", headers=buyer)).status_code == 204
    await api.settled()
    released = (await api.http.get(url)).json()
    assert (released["orderId"], released["version"]) == (None, 3)

    edited = await api.http.put(url, json={"title": "encore", "price": 30}, headers=owner)
    assert (edited.status_code, edited.json()["version"]) == (200, 4)
    await api.settled()
    assert await replica(sessions, ticket["id"]) == {"title": "encore", "price": 30, "version": 4}
    # The buyer's order shows the ticket as the orders module knows it now.
    shown = (await api.http.get(f"/api/orders/{order['id']}", headers=buyer)).json()
    assert shown["ticket"] == {"id": ticket["id"], "title": "encore", "price": 30, "version": 4}
    counters = (await api.http.get("/ops/bus")).json()
    assert (counters["deadLettered"], counters["pending"]) == (0, 0)
