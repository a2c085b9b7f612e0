"""SPEC's "The door": what every request meets before a handler, and what every answer carries."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app import metrics, ops
from app.common.auth import CurrentUser, Tokens
from app.common.ops_token import ops_token_guard
from app.live.routes import events as live_events
from app.settings import Settings
from tests.conftest import JWT_SECRET, AppFactory, make_settings
from tests.deployments import Api

OPS_TOKEN = "let-me-in"


@pytest.fixture
def guarded(start_app: AppFactory, database_url: str) -> Callable[..., Any]:
    """An app whose settings differ from the tests' usual ones by ``auth`` fields."""

    @asynccontextmanager
    async def start(**auth: Any) -> AsyncIterator[Api]:
        settings = make_settings(database_url, "memory://")
        changed = Settings(
            database=settings.database,
            bus=settings.bus,
            auth=dataclasses.replace(settings.auth, **auth),
            modules=settings.modules,
        )
        async with start_app(settings=changed) as api:
            yield api

    return start


# ---- one ops token, one check -------------------------------------------------------------------

# Each guarded route, and the words its refusal uses for itself.
OPS_ROUTES = {"/ops/bus": "/ops needs", "/metrics": "/metrics needs", "/demo/events": "/demo/events needs"}


async def test_each_ops_token_route_refuses_a_missing_or_wrong_token_naming_itself(guarded: Callable[..., Any]) -> None:
    async with guarded(ops_token=OPS_TOKEN) as api:
        for path, words in OPS_ROUTES.items():
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OPS_TOKEN}"}):
                refused = await api.http.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                (error,) = refused.json()["errors"]
                assert error["message"].startswith("Not authorized") and words in error["message"], (path, error)
        # The stream alone also reads ?token= (EventSource sends no headers), and it must be right.
        assert (await api.http.get("/demo/events", params={"token": "wrong"})).status_code == 401
        assert (await api.http.get("/ops/bus", params={"token": OPS_TOKEN})).status_code == 401
        for path in ("/ops/bus", "/metrics"):
            assert (await api.http.get(path, headers={"Authorization": f"Bearer {OPS_TOKEN}"})).status_code == 200


async def test_ops_token_routes_are_open_when_no_token_is_set(guarded: Callable[..., Any]) -> None:
    async with guarded(ops_token=None) as api:
        for path in ("/ops/bus", "/metrics"):
            assert (await api.http.get(path)).status_code == 200, path


def test_ops_metrics_and_the_live_stream_share_one_token_check() -> None:
    # The same check, not three that look alike: each guard is a closure of ops_token_guard.
    check = ops_token_guard("any").__code__
    handlers = [ops.bus_counters, ops.dead_letters, ops.replay_dead_letter, metrics.metrics, live_events]
    for handler in handlers:
        assert [guard.__code__ for guard in handler.guards or []] == [check], handler


# ---- cross-origin writes --------------------------------------------------------------------------

# The in-process app is reached as http://testserver (tests/deployments.py).
OURS = "http://testserver"
FOREIGN = [
    "https://evil.example",
    "http://testserver.evil.example",
    "https://testserver",
    "http://testserver:8080",
    "null",
]


def cookie(user_id: str | None = None) -> dict[str, str]:
    """A browser's request headers: the session cookie, no Authorization header."""
    token = Tokens(JWT_SECRET).issue(CurrentUser(user_id or str(uuid.uuid4()), "ada@example.com"))
    return {"Cookie": f"session={token}"}


def cross_origin_refusal(response: httpx.Response) -> bool:
    if response.status_code != 403:
        return False
    (error,) = response.json()["errors"]
    return "origin" in str(error["message"])


@pytest.mark.parametrize("origin", FOREIGN)
async def test_a_cookie_signed_write_from_another_origin_is_refused_with_403(api: Api, origin: str) -> None:
    owner = cookie()
    ticket = await api.create_ticket(owner)
    await api.settled()
    order = await api.order(owner, ticket["id"])
    at = {"Origin": origin}
    writes = [
        api.http.post("/api/tickets", json={"title": "forged", "price": 1}, headers={**owner, **at}),
        api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "forged", "price": 1}, headers={**owner, **at}),
        api.http.delete(f"/api/orders/{order['id']}", headers={**owner, **at}),
        api.http.post("/api/users/signout", headers={**owner, **at}),
    ]
    for write in writes:
        refused = await write
        assert cross_origin_refusal(refused), (refused.request.method, refused.request.url, refused.text)
    # Nothing was done: the ticket kept its title, the order is still there.
    assert (await api.http.get(f"/api/tickets/{ticket['id']}")).json()["title"] == "concert"
    assert (await api.http.get(f"/api/orders/{order['id']}", headers=owner)).json()["status"] == "created"


async def test_writes_from_the_same_origin_without_origin_or_by_bearer_go_through(api: Api) -> None:
    headers = [
        {**cookie(), "Origin": OURS},
        {**cookie(), "Origin": f"{OURS}:80"},  # the default port, spelled out
        {**cookie(), "Origin": "HTTP://TestServer"},  # origins compare case-blind
        cookie(),  # curl and scripts send no Origin
        {**api.auth(), "Origin": "https://evil.example"},  # no browser sends a Bearer token by itself
        {**api.auth(), **cookie(), "Origin": "https://evil.example"},  # the Bearer token is what signs it in
    ]
    for sent in headers:
        created = await api.http.post("/api/tickets", json={"title": "concert", "price": 20}, headers=sent)
        assert created.status_code == 201, (sent, created.text)


async def test_reads_and_anonymous_writes_are_not_asked_where_they_come_from(api: Api) -> None:
    foreign = {"Origin": "https://evil.example"}
    assert (await api.http.get("/api/users/currentuser", headers={**cookie(), **foreign})).status_code == 200
    assert (await api.http.get("/api/orders", headers={**cookie(), **foreign})).status_code == 200
    # No credential to borrow: the usual 401 for a route that needs one.
    anonymous = await api.http.post("/api/tickets", json={"title": "concert", "price": 20}, headers=foreign)
    assert anonymous.status_code == 401


async def test_the_origin_compared_is_the_one_the_request_was_sent_to(api: Api) -> None:
    # Behind a TLS proxy uvicorn makes the scope's scheme https (X-Forwarded-Proto); so does this URL.
    url, body = "https://testserver/api/tickets", {"title": "concert", "price": 20}
    ok = await api.http.post(url, json=body, headers={**cookie(), "Origin": "https://testserver"})
    refused = await api.http.post(url, json=body, headers={**cookie(), "Origin": "http://testserver"})
    assert ok.status_code == 201, ok.text
    assert cross_origin_refusal(refused), refused.text
