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
from app.common.headers import door_headers
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


# ---- headers every answer carries ---------------------------------------------------------------

PASSWORD = "correct horse"


async def sign_up(api: Api) -> httpx.Response:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    signed_up = await api.http.post("/api/users/signup", json={"email": email, "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.text
    api.http.cookies.clear()  # each test says which credentials it sends
    return signed_up


async def test_every_answer_says_nosniff_errors_and_documents_included(api: Api) -> None:
    answers = [
        await api.http.get("/health"),
        await api.http.get("/api/tickets"),
        await api.http.get("/api/nothing-here"),  # 404, no route at all
        await api.http.patch("/api/tickets"),  # 405
        await api.http.post("/api/tickets", json={"title": "", "price": 1}, headers=api.auth()),  # 400
        await api.http.post("/api/tickets", content=b"title=x", headers={"Content-Type": "text/plain"}),  # 415
        await api.http.get("/api/orders"),  # 401
        await api.http.get("/schema/openapi.json"),
        await api.http.get("/schema/asyncapi.json"),
        await api.http.get("/metrics"),
        await api.http.get("/demo"),
        await api.http.get("/demo/demo.js"),
        await api.http.get("/demo/secrets.py"),
    ]
    for answer in answers:
        assert answer.headers.get("x-content-type-options") == "nosniff", (answer.request.url, answer.status_code)
    assert {answer.status_code for answer in answers} >= {200, 400, 401, 404, 405, 415}


async def test_answers_with_a_token_or_the_callers_own_data_are_not_stored(api: Api) -> None:
    signed_up = await sign_up(api)
    email, token = signed_up.json()["email"], signed_up.json()["token"]
    bearer, browser = {"Authorization": f"Bearer {token}"}, {"Cookie": f"session={token}"}
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    answers = {
        "signup": signed_up,
        "signin": await api.http.post("/api/users/signin", json={"email": email, "password": PASSWORD}),
        "signout": await api.http.post("/api/users/signout", headers=browser),
        "currentuser": await api.http.get("/api/users/currentuser", headers=browser),
        "currentuser, nobody": await api.http.get("/api/users/currentuser"),
        "order": await api.http.post("/api/orders", json={"ticketId": ticket["id"]}, headers=bearer),
        "orders": await api.http.get("/api/orders", headers=bearer),
        "orders, refused": await api.http.get("/api/orders"),
        "a ticket, by Bearer": await api.http.get(f"/api/tickets/{ticket['id']}", headers=bearer),
        "tickets, by cookie": await api.http.get("/api/tickets", headers=browser),
        "ops, by token": await api.http.get("/ops/bus", headers={"Authorization": "Bearer ops"}),
    }
    api.http.cookies.clear()
    for name, answer in answers.items():
        assert answer.status_code < 500, (name, answer.text)
        assert answer.headers.get("cache-control") == "no-store", name
    # What anyone may see may be cached: the public list asked for without credentials.
    public = await api.http.get("/api/tickets")
    assert public.status_code == 200 and "cache-control" not in public.headers


async def test_the_live_view_cannot_be_framed_and_runs_only_its_own_code(api: Api) -> None:
    for path in ("/demo", "/demo/demo.js"):
        page = await api.http.get(path)
        assert page.status_code == 200
        assert page.headers["x-frame-options"] == "DENY"
        policy = {
            directive.split()[0]: directive.split()[1:]
            for directive in page.headers["content-security-policy"].split("; ")
        }
        assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'self'"], policy
    elsewhere = await api.http.get("/api/tickets")
    assert "x-frame-options" not in elsewhere.headers and "content-security-policy" not in elsewhere.headers


def _session_cookies(answer: httpx.Response) -> list[str]:
    return [cookie for cookie in answer.headers.get_list("set-cookie") if cookie.startswith("session=")]


@pytest.mark.parametrize("secure", [True, False])
async def test_cookie_secure_makes_every_session_cookie_secure(guarded: Callable[..., Any], secure: bool) -> None:
    async with guarded(cookie_secure=secure) as api:
        signed_up = await sign_up(api)
        email = signed_up.json()["email"]
        signed_in = await api.http.post("/api/users/signin", json={"email": email, "password": PASSWORD})
        signed_out = await api.http.post("/api/users/signout")
    for answer in (signed_up, signed_in, signed_out):
        (cookie,) = _session_cookies(answer)
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert ("secure" in attributes) is secure, cookie
        assert {"httponly", "path=/", "samesite=lax"} <= attributes or answer is signed_out, cookie


async def test_a_route_that_says_how_to_cache_its_answer_keeps_its_word() -> None:
    from litestar import Litestar, get
    from litestar.datastructures import CacheControlHeader
    from litestar.testing import AsyncTestClient

    @get("/api/orders/summary", cache_control=CacheControlHeader(private=True, max_age=60))
    async def summary() -> dict[str, int]:
        return {"orders": 0}

    app = Litestar([summary], before_send=[door_headers(cookie_secure=False)])
    async with AsyncTestClient(app) as client:
        answer = await client.get("/api/orders/summary", headers={"Authorization": "Bearer x"})
    assert answer.headers["cache-control"] == "max-age=60, private"
    assert answer.headers["x-content-type-options"] == "nosniff"
