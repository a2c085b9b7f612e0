"""The orders HTTP API: the course's route tests, and every status code SPEC.md names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Api


async def ticket_for_sale(api: Api, title: str = "concert", price: float = 20) -> dict[str, object]:
    ticket = await api.create_ticket(api.auth(), title=title, price=price)
    await api.settled()  # the orders module learns of it through ticket:created
    return ticket


async def test_ordering_needs_a_signed_in_user(api: Api) -> None:
    assert (await api.http.post("/api/orders", json={"ticketId": "nonsense"})).status_code == 401
    assert (await api.http.get("/api/orders")).status_code == 401
    assert (await api.http.get(f"/api/orders/{uuid.uuid4()}")).status_code == 401
    assert (await api.http.delete(f"/api/orders/{uuid.uuid4()}")).status_code == 401
    # Asking which methods exist needs no credentials (a browser's preflight has none).
    options = await api.http.options(f"/api/orders/{uuid.uuid4()}")
    assert options.status_code == 204
    # Litestar 2 lists only one handler's method per path in Allow (litestar-org/litestar#4169).
    assert "OPTIONS" in options.headers["allow"]


@pytest.mark.parametrize("body", [{}, {"ticketId": ""}, {"ticketId": "abc"}, {"ticketId": 5}, {"ticket": "x"}])
async def test_a_missing_or_malformed_ticket_id_is_400(api: Api, body: dict[str, object]) -> None:
    response = await api.http.post("/api/orders", json=body, headers=api.auth())
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "ticketId"


async def test_ordering_a_ticket_that_does_not_exist_is_404(api: Api) -> None:
    response = await api.http.post("/api/orders", json={"ticketId": str(uuid.uuid4())}, headers=api.auth())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Ticket not found", "field": "ticketId"}]}


async def test_reserves_a_ticket_and_publishes_order_created(api: Api) -> None:
    ticket = await ticket_for_sale(api, price=12.5)
    buyer = str(uuid.uuid4())
    before = datetime.now(UTC)
    response = await api.http.post("/api/orders", json={"ticketId": ticket["id"]}, headers=api.auth(buyer))
    assert response.status_code == 201
    order = response.json()
    assert order["userId"] == buyer
    assert order["status"] == "created"
    assert order["version"] == 0
    assert order["ticket"] == {"id": ticket["id"], "title": "concert", "price": 12.5, "version": 0}
    expires = datetime.fromisoformat(order["expiresAt"])
    assert before + timedelta(minutes=15) <= expires <= datetime.now(UTC) + timedelta(minutes=15)
    await api.settled()
    # The tickets module heard of it: the ticket is held by the order.
    held = (await api.http.get(f"/api/tickets/{ticket['id']}")).json()
    assert (held["orderId"], held["version"]) == (order["id"], 1)


async def test_ordering_a_reserved_ticket_is_409(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    await api.order(api.auth(), str(ticket["id"]))
    response = await api.http.post("/api/orders", json={"ticketId": ticket["id"]}, headers=api.auth())
    assert response.status_code == 409
    assert response.json()["errors"][0]["message"] == "Ticket is already reserved"


async def test_lists_only_the_callers_orders(api: Api) -> None:
    alice, bob = api.auth(), api.auth()
    tickets = [await ticket_for_sale(api, title=title) for title in ("one", "two", "three")]
    await api.order(bob, str(tickets[0]["id"]))
    mine = [await api.order(alice, str(ticket["id"])) for ticket in tickets[1:]]
    response = await api.http.get("/api/orders", headers=alice)
    assert response.status_code == 200
    assert [order["id"] for order in response.json()] == [order["id"] for order in mine]
    assert [order["ticket"]["title"] for order in response.json()] == ["two", "three"]


async def test_shows_an_order_to_its_owner_only(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    owner = api.auth()
    order = await api.order(owner, str(ticket["id"]))
    shown = await api.http.get(f"/api/orders/{order['id']}", headers=owner)
    assert (shown.status_code, shown.json()) == (200, order)
    other = await api.http.get(f"/api/orders/{order['id']}", headers=api.auth())
    assert other.status_code == 403
    assert other.json()["errors"][0]["message"] == "This order belongs to someone else"


async def test_an_unknown_order_is_404_and_a_malformed_id_is_400(api: Api) -> None:
    headers = api.auth()
    assert (await api.http.get(f"/api/orders/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert (await api.http.delete(f"/api/orders/{uuid.uuid4()}", headers=headers)).status_code == 404
    malformed = await api.http.get("/api/orders/123", headers=headers)
    assert (malformed.status_code, malformed.json()["errors"][0]["field"]) == (400, "id")


async def test_cancelling_marks_the_order_cancelled_and_publishes_order_cancelled(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    owner = api.auth()
    order = await api.order(owner, str(ticket["id"]))
    await api.settled()
    response = await api.http.delete(f"/api/orders/{order['id']}", headers=owner)
    assert (response.status_code, response.content) == (204, b"")
    cancelled = (await api.http.get(f"/api/orders/{order['id']}", headers=owner)).json()
    assert (cancelled["status"], cancelled["version"]) == ("cancelled", 1)
    await api.settled()
    released = (await api.http.get(f"/api/tickets/{ticket['id']}")).json()
    assert (released["orderId"], released["version"]) == (None, 2)


async def test_cancelling_twice_is_204_and_publishes_nothing_more(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    owner = api.auth()
    order = await api.order(owner, str(ticket["id"]))
    assert (await api.http.delete(f"/api/orders/{order['id']}", headers=owner)).status_code == 204
    await api.settled()
    published = api.runtime.bus.stats.published
    assert (await api.http.delete(f"/api/orders/{order['id']}", headers=owner)).status_code == 204
    await api.settled()
    assert api.runtime.bus.stats.published == published
    assert (await api.http.get(f"/api/orders/{order['id']}", headers=owner)).json()["version"] == 1


async def test_only_the_owner_may_cancel(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    owner = api.auth()
    order = await api.order(owner, str(ticket["id"]))
    assert (await api.http.delete(f"/api/orders/{order['id']}", headers=api.auth())).status_code == 403
    assert (await api.http.get(f"/api/orders/{order['id']}", headers=owner)).json()["status"] == "created"


async def test_a_cancelled_ticket_can_be_ordered_again(api: Api) -> None:
    ticket = await ticket_for_sale(api)
    first_buyer, second_buyer = api.auth(), api.auth()
    first = await api.order(first_buyer, str(ticket["id"]))
    await api.http.delete(f"/api/orders/{first['id']}", headers=first_buyer)
    second = await api.order(second_buyer, str(ticket["id"]))
    await api.settled()
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json()["orderId"] == second["id"]
