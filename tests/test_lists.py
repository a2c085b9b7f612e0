"""SPEC "Lists": GET /api/tickets and GET /api/orders page with limit, cursor and Link: rel="next"."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from app.clock import utcnow
from app.common.events import OrderStatus
from app.orders.models import Order, TicketReplica
from app.tickets.models import Ticket
from tests.conftest import Api

_NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


def ticket_rows(count: int, *, ids: Iterable[str] | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
    owner = str(uuid.uuid4())
    chosen = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in range(count)]
    return [
        {"id": i, "title": f"t{n}", "price": Decimal(5), "user_id": owner, "order_id": order_id, "version": 0}
        for n, i in enumerate(chosen)
    ]


async def insert_tickets(api: Api, rows: list[dict[str, Any]]) -> None:
    """Tickets straight into the table, many per statement: the lists read them like any other."""
    async with api.sessions("tickets")() as session:
        await session.execute(insert(Ticket), rows)
        await session.commit()


def next_url(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = _NEXT.match(link)
    assert match, f"not a next link: {link!r}"
    return match.group(1)


async def follow(api: Api, url: str, headers: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page, following Link until there is none."""
    pages: list[list[dict[str, Any]]] = []
    next_page: str | None = url
    while next_page is not None:
        response = await api.http.get(next_page, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_page = next_url(response)
    return pages


async def test_tickets_come_100_to_a_page_and_the_link_leads_to_the_rest(api: Api) -> None:
    await insert_tickets(api, ticket_rows(150))
    first = await api.http.get("/api/tickets")
    assert len(first.json()) == 100
    assert next_url(first) is not None
    pages = await follow(api, "/api/tickets")
    assert [len(page) for page in pages] == [100, 50]
    ids = [ticket["id"] for page in pages for ticket in page]
    assert ids == sorted(ids) and len(set(ids)) == 150


async def test_the_last_page_has_no_link(api: Api) -> None:
    await insert_tickets(api, ticket_rows(3))
    response = await api.http.get("/api/tickets?limit=3")
    assert len(response.json()) == 3
    assert "link" not in response.headers


async def test_new_tickets_are_listed_after_older_ones(api: Api) -> None:
    owner = api.auth()
    made = [(await api.create_ticket(owner, title=f"t{n}"))["id"] for n in range(5)]
    assert [ticket["id"] for ticket in (await api.http.get("/api/tickets")).json()] == made
    assert all(uuid.UUID(ticket_id).version == 7 for ticket_id in made)


async def test_available_lists_only_tickets_no_order_holds(api: Api) -> None:
    free, held = ticket_rows(3), ticket_rows(2, order_id=str(uuid.uuid4()))
    await insert_tickets(api, free + held)
    available = (await api.http.get("/api/tickets?available=true")).json()
    taken = (await api.http.get("/api/tickets?available=false")).json()
    assert sorted(t["id"] for t in available) == sorted(row["id"] for row in free)
    assert sorted(t["id"] for t in taken) == sorted(row["id"] for row in held)
    assert len((await api.http.get("/api/tickets")).json()) == 5


async def test_the_next_link_keeps_the_filter_and_the_limit(api: Api) -> None:
    await insert_tickets(api, ticket_rows(5) + ticket_rows(5, order_id=str(uuid.uuid4())))
    pages = await follow(api, "/api/tickets?available=true&limit=2")
    assert [len(page) for page in pages] == [2, 2, 1]
    assert all(ticket["orderId"] is None for page in pages for ticket in page)
    response = await api.http.get("/api/tickets?available=true&limit=2")
    url = httpx.URL(next_url(response) or "")
    assert (url.params["available"], url.params["limit"]) == ("true", "2")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=", "cursor"),
        ("available=perhaps", "available"),
    ],
)
async def test_a_bad_limit_cursor_or_filter_is_400_naming_it(api: Api, query: str, field: str) -> None:
    response = await api.http.get(f"/api/tickets?{query}")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert field in error["message"]


async def test_at_most_1000_a_page(api: Api) -> None:
    await insert_tickets(api, ticket_rows(1001))
    response = await api.http.get("/api/tickets?limit=1000")
    assert len(response.json()) == 1000
    assert next_url(response) is not None


async def test_paging_10000_tickets_while_others_are_created_sees_each_exactly_once(api: Api) -> None:
    """Keyset pages: tickets created meanwhile, before or after the cursor, shift nothing."""
    original = ticket_rows(10_000)
    await insert_tickets(api, original)
    owner = api.auth()
    created = 0

    async def others_meanwhile() -> None:
        # Random ids land anywhere in the order, before the cursor as well as after it; one
        # through the API as a client would (a UUIDv7, after everything).
        nonlocal created
        await insert_tickets(api, ticket_rows(20))
        await api.create_ticket(owner)
        created += 21

    seen: list[str] = []
    next_page: str | None = "/api/tickets"
    while next_page is not None:
        response, _ = await asyncio.gather(api.http.get(next_page), others_meanwhile())
        assert response.status_code == 200
        seen += [ticket["id"] for ticket in response.json()]
        next_page = next_url(response)
    counts = Counter(seen)
    assert [ticket_id for ticket_id, n in counts.items() if n > 1] == []
    assert {row["id"] for row in original} <= set(seen)
    assert seen == sorted(seen)
    assert created > 0


async def insert_orders(api: Api, user_id: str, count: int) -> list[str]:
    """Orders (and the replicas they need) straight into the orders module's tables."""
    now = utcnow()
    ticket_ids = [str(uuid.uuid4()) for _ in range(count)]
    orders: list[dict[str, Any]] = [
        {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "ticket_id": ticket_id,
            "status": OrderStatus.CREATED.value,
            "expires_at": now + timedelta(minutes=15),
            "created_at": now,
            "version": 0,
        }
        for ticket_id in ticket_ids
    ]
    replicas = [{"id": i, "title": "t", "price": Decimal(5), "version": 0} for i in ticket_ids]
    async with api.sessions("orders")() as session:
        await session.execute(insert(TicketReplica), replicas)
        await session.execute(insert(Order), orders)
        await session.commit()
    return sorted(order["id"] for order in orders)


async def test_orders_page_in_id_order_and_only_the_callers(api: Api) -> None:
    buyer = str(uuid.uuid4())
    mine = await insert_orders(api, buyer, 25)
    await insert_orders(api, str(uuid.uuid4()), 10)
    pages = await follow(api, "/api/orders?limit=10", headers=api.auth(buyer))
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [order["id"] for page in pages for order in page] == mine


async def test_a_cursor_is_where_the_page_starts(api: Api) -> None:
    rows = ticket_rows(5)
    await insert_tickets(api, rows)
    ids = sorted(row["id"] for row in rows)
    after_second = (await api.http.get(f"/api/tickets?cursor={ids[1]}")).json()
    assert [ticket["id"] for ticket in after_second] == ids[2:]
