"""The tickets HTTP API: the course's route tests, and every status code SPEC.md names."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from app.bus.outbox import OutboxRecord
from tests.conftest import Api


def errors(response: Any) -> list[tuple[str | None, str]]:
    return [(error.get("field"), error["message"]) for error in response.json()["errors"]]


async def test_the_create_route_exists(api: Api) -> None:
    assert (await api.http.post("/api/tickets", json={})).status_code != 404


async def test_creating_needs_a_signed_in_user_and_that_comes_before_validation(api: Api) -> None:
    response = await api.http.post("/api/tickets", json={"title": "", "price": -1})
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"].startswith("Not authorized")
    forged = {"Authorization": "Bearer not.a.token"}
    assert (await api.http.post("/api/tickets", json={"title": "t", "price": 1}, headers=forged)).status_code == 401


async def test_a_signed_in_user_gets_past_authentication(api: Api) -> None:
    assert (await api.http.post("/api/tickets", json={}, headers=api.auth())).status_code != 401


@pytest.mark.parametrize(
    "title", ["", "     ", "x" * 201, None, 42, ["a"]], ids=["empty", "blank", "long", "null", "number", "list"]
)
async def test_an_invalid_title_is_refused_naming_the_field(api: Api, title: object) -> None:
    response = await api.http.post("/api/tickets", json={"title": title, "price": 10}, headers=api.auth())
    assert response.status_code == 400
    assert [field for field, _ in errors(response)] == ["title"]


async def test_a_missing_title_is_refused(api: Api) -> None:
    response = await api.http.post("/api/tickets", json={"price": 10}, headers=api.auth())
    assert (response.status_code, errors(response)) == (400, [("title", "title is required")])


@pytest.mark.parametrize(
    "price",
    [-10, 0, 1_000_000, 10.001, "10", True, None, 1e300, 0.001],
    ids=["negative", "zero", "too-big", "three-decimals", "string", "bool", "null", "huge", "tiny"],
)
async def test_an_invalid_price_is_refused_naming_the_field(api: Api, price: object) -> None:
    response = await api.http.post("/api/tickets", json={"title": "concert", "price": price}, headers=api.auth())
    assert response.status_code == 400
    assert [field for field, _ in errors(response)] == ["price"]


@pytest.mark.parametrize(
    ("price", "complaint"),
    [
        (b"10.0000000000000001", "price must have at most two decimals"),
        (b"1e400", "price must be greater than 0 and below 1000000"),
    ],
)
async def test_prices_beyond_what_a_float_holds_are_still_judged_exactly(
    api: Api, price: bytes, complaint: str
) -> None:
    body = b'{"title": "concert", "price": ' + price + b"}"
    response = await api.http.post(
        "/api/tickets", content=body, headers={**api.auth(), "content-type": "application/json"}
    )
    assert (response.status_code, errors(response)) == (400, [("price", complaint)])


async def test_both_fields_are_reported_when_both_are_wrong(api: Api) -> None:
    response = await api.http.post("/api/tickets", json={"title": " ", "price": 0}, headers=api.auth())
    assert [field for field, _ in errors(response)] == ["title", "price"]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "Request body is not valid JSON"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b"", "Request body is missing: send a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"[" * 30_000 + b"]" * 30_000, "Request body is nested too deeply"),
    ],
    ids=["malformed", "array", "empty", "string", "deep"],
)
async def test_a_body_that_is_not_a_json_object_is_refused(api: Api, body: bytes, complaint: str) -> None:
    response = await api.http.post(
        "/api/tickets", content=body, headers={**api.auth(), "content-type": "application/json"}
    )
    assert (response.status_code, errors(response)) == (400, [(None, complaint)])


async def test_a_title_with_a_nul_character_is_400_on_every_database(api: Api) -> None:
    response = await api.http.post("/api/tickets", json={"title": "con\x00cert", "price": 10}, headers=api.auth())
    assert (response.status_code, errors(response)) == (400, [("title", "title must not contain NUL characters")])


async def test_creates_a_ticket_with_valid_inputs_and_publishes_ticket_created(api: Api) -> None:
    user = str(uuid.uuid4())
    response = await api.http.post(
        "/api/tickets", json={"title": "  concert  ", "price": 999999.99}, headers=api.auth(user)
    )
    assert response.status_code == 201
    ticket = response.json()
    assert ticket == {
        "id": ticket["id"],
        "title": "concert",
        "price": 999999.99,
        "userId": user,
        "orderId": None,
        "version": 0,
    }
    assert response.headers["etag"] == '"0"'
    await api.settled()
    assert api.runtime.bus.stats.published == 1
    listed = (await api.http.get("/api/tickets")).json()
    assert [t["id"] for t in listed] == [ticket["id"]]


async def test_prices_come_back_exactly_as_sent(api: Api) -> None:
    for price in (0.01, 0.1, 19.99, 1234.5, 100):
        ticket = await api.create_ticket(api.auth(), price=price)
        assert ticket["price"] == price
        assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json()["price"] == price


async def test_showing_an_unknown_ticket_is_404(api: Api) -> None:
    response = await api.http.get(f"/api/tickets/{uuid.uuid4()}")
    assert (response.status_code, errors(response)) == (404, [(None, "Ticket not found")])


async def test_a_malformed_ticket_id_is_400(api: Api) -> None:
    response = await api.http.get("/api/tickets/not-a-uuid")
    assert (response.status_code, errors(response)) == (400, [("id", "id must be a UUID")])


async def test_shows_the_ticket_with_its_version_as_etag(api: Api) -> None:
    ticket = await api.create_ticket(api.auth(), title="opera", price=35)
    response = await api.http.get(f"/api/tickets/{ticket['id']}")
    assert response.status_code == 200
    assert response.json() == ticket
    assert response.headers["etag"] == '"0"'


async def test_lists_every_ticket(api: Api) -> None:
    owner = api.auth()
    for title in ("a", "b", "c"):
        await api.create_ticket(owner, title=title)
    response = await api.http.get("/api/tickets")
    assert response.status_code == 200
    assert sorted(ticket["title"] for ticket in response.json()) == ["a", "b", "c"]


async def test_updating_an_unknown_ticket_is_404(api: Api) -> None:
    response = await api.http.put(f"/api/tickets/{uuid.uuid4()}", json={"title": "t", "price": 1}, headers=api.auth())
    assert response.status_code == 404


async def test_updating_needs_a_signed_in_user(api: Api) -> None:
    ticket = await api.create_ticket(api.auth())
    assert (await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "t", "price": 1})).status_code == 401


async def test_only_the_owner_may_update(api: Api) -> None:
    ticket = await api.create_ticket(api.auth())
    response = await api.http.put(
        f"/api/tickets/{ticket['id']}", json={"title": "mine", "price": 1}, headers=api.auth()
    )
    assert response.status_code == 403
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json() == ticket, "nothing changed"


async def test_an_update_with_invalid_inputs_is_400_and_changes_nothing(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    for body in ({"title": "", "price": 20}, {"title": "ok", "price": -10}, {"title": "ok"}):
        response = await api.http.put(f"/api/tickets/{ticket['id']}", json=body, headers=owner)
        assert response.status_code == 400
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json() == ticket


async def test_updates_the_ticket_and_publishes_ticket_updated(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    response = await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "new", "price": 100}, headers=owner)
    assert response.status_code == 200
    assert response.json() == {**ticket, "title": "new", "price": 100, "version": 1}
    assert response.headers["etag"] == '"1"'
    await api.settled()
    assert api.runtime.bus.stats.published == 2


async def test_an_update_that_changes_nothing_saves_nothing(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner, title="same", price=20)
    response = await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "same", "price": 20.00}, headers=owner)
    assert (response.status_code, response.json()["version"]) == (200, 0)
    await api.settled()
    assert api.runtime.bus.stats.published == 1


async def test_if_match_guards_against_editing_a_version_you_have_not_seen(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    url = f"/api/tickets/{ticket['id']}"
    first = await api.http.put(url, json={"title": "v1", "price": 1}, headers={**owner, "If-Match": '"0"'})
    assert (first.status_code, first.headers["etag"]) == (200, '"1"')
    stale = await api.http.put(url, json={"title": "lost", "price": 2}, headers={**owner, "If-Match": '"0"'})
    assert stale.status_code == 412
    assert "does not match" in stale.json()["errors"][0]["message"]
    assert (await api.http.get(url)).json()["title"] == "v1"
    wildcard = await api.http.put(url, json={"title": "v2", "price": 2}, headers={**owner, "If-Match": "*"})
    assert wildcard.status_code == 200


async def test_a_reserved_ticket_cannot_be_edited(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    await api.settled()
    await api.order(api.auth(), ticket["id"])
    await api.settled()
    response = await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "new", "price": 1}, headers=owner)
    assert (response.status_code, errors(response)) == (409, [(None, "Cannot edit a reserved ticket")])


async def test_checks_come_in_order_401_400_404_403_then_412(api: Api) -> None:
    owner, stranger = api.auth(), api.auth()
    ticket = await api.create_ticket(owner)
    url, missing = f"/api/tickets/{ticket['id']}", f"/api/tickets/{uuid.uuid4()}"
    bad, good = {"title": "", "price": 1}, {"title": "t", "price": 1}
    assert (await api.http.put(missing, json=bad)).status_code == 401
    assert (await api.http.put(missing, json=bad, headers=stranger)).status_code == 400
    assert (await api.http.put(missing, json=good, headers=stranger)).status_code == 404
    assert (await api.http.put(url, json=good, headers={**stranger, "If-Match": '"9"'})).status_code == 403
    assert (await api.http.put(url, json=good, headers={**owner, "If-Match": '"9"'})).status_code == 412


async def test_a_price_keeps_one_spelling_whatever_the_client_wrote(api: Api) -> None:
    body = b'{"title": "concert", "price": 1e2}'
    response = await api.http.post(
        "/api/tickets", content=body, headers={**api.auth(), "content-type": "application/json"}
    )
    assert (response.status_code, response.json()["price"]) == (201, 100)
    async with api.runtime.sessionmaker() as session:
        [payload] = (await session.scalars(select(OutboxRecord.payload))).all()
    assert b'"price":100.00' in payload
