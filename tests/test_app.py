"""The app shell: settings, wiring, health, ops routes, errors, the OpenAPI schema."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from pathlib import Path

import pytest

from app.bus import Message
from app.clock import utcnow
from app.live.feed import Feed
from app.main import create_app
from app.preflight import StartupError, preflight
from app.settings import KNOWN_MODULES, Settings, SettingsError, parse_modules
from tests.conftest import AppFactory, make_settings


def test_settings_default_to_the_spec() -> None:
    settings = Settings.from_env({})
    assert settings.database.url == "sqlite+aiosqlite:///ticketing.db"
    assert settings.bus.url == "memory://"
    assert settings.modules == KNOWN_MODULES
    assert settings.auth.ops_token is None
    assert settings.auth.generated_secret
    assert len(settings.auth.jwt_secret) >= 32
    assert (settings.auth.cookie_secure, settings.auth.attempts_per_minute) == (False, 30)


def test_settings_read_every_variable() -> None:
    settings = Settings.from_env(
        {
            "TICKETING_DATABASE_URL": "postgresql+asyncpg://db/x",
            "TICKETING_BUS_URL": "nats://nats:4222",
            "TICKETING_MODULES": "orders, tickets",
            "TICKETING_JWT_SECRET": "s3cret",
            "TICKETING_OPS_TOKEN": "ops",
            "TICKETING_COOKIE_SECURE": "1",
            "TICKETING_AUTH_RATE": "0",
        }
    )
    assert (settings.auth.cookie_secure, settings.auth.attempts_per_minute) == (True, 0)
    assert settings.database.url == "postgresql+asyncpg://db/x"
    assert settings.bus.url == "nats://nats:4222"
    assert settings.modules == ("orders", "tickets")
    assert (settings.auth.jwt_secret, settings.auth.generated_secret, settings.auth.ops_token) == (
        "s3cret",
        False,
        "ops",
    )


@pytest.mark.parametrize(("value", "complaint"), [("users,payments", "unknown module"), (" , ", "is empty")])
def test_unknown_modules_are_refused_by_name(value: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        parse_modules(value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TICKETING_COOKIE_SECURE", "yes"), ("TICKETING_AUTH_RATE", "-1"), ("TICKETING_AUTH_RATE", "many")],
)
def test_a_setting_that_cannot_be_read_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_a_random_jwt_secret_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_app(Settings.from_env({}))
    assert any("TICKETING_JWT_SECRET is not set" in record.getMessage() for record in caplog.records)


def test_creating_the_app_connects_to_nothing(tmp_path: pytest.TempPathFactory) -> None:
    # A database URL on an unreachable host is fine until the app starts.
    create_app(make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none", "memory://"))


def test_a_failed_preflight_leaves_no_thread_to_trip_over_the_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ticketing run`` closes its loop right after a failed preflight; nothing may print a traceback then.

    aiosqlite's worker thread outlives a failed connect by a moment; if the loop is closed first,
    the thread dies with "Event loop is closed" under the one-line error. The race is narrow, so
    it is run many times, each loop closed at once as ``asyncio.run`` does.
    """
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db", "memory://")
    for _ in range(30):
        loop = asyncio.new_event_loop()
        with pytest.raises(StartupError, match="unable to open database file"):
            loop.run_until_complete(preflight(settings))
        loop.close()
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(5)
    assert thread_errors == []


async def test_health_reports_the_database_and_bus_it_uses(start_app: AppFactory, database_url: str) -> None:
    async with start_app() as api:
        response = await api.http.get("/health")
        asked_with_head = await api.http.head("/health")
    assert response.status_code == 200
    # What uptime monitors send: the same status, no body.
    assert (asked_with_head.status_code, asked_with_head.content) == (200, b"")
    body = response.json()
    assert body["status"] == "ok"
    assert body["databaseOk"]
    assert body["busOk"]
    assert body["bus"] == "in-memory bus"
    assert body["database"].split()[0] in {"SQLite", "PostgreSQL"}
    assert body["modules"] == ["users", "tickets", "orders"]


async def test_health_is_503_when_the_database_is_gone(start_app: AppFactory) -> None:
    async with start_app() as api:
        # Point the engine at a file that cannot be opened: the next ping fails.
        from app import db

        working, api.runtime.engine = api.runtime.engine, db.create_engine("sqlite+aiosqlite:////nonexistent-dir/x.db")
        try:
            response = await api.http.get("/health")
            asked_with_head = await api.http.head("/health")
        finally:
            # The runtime's stop closes its own engine's connections, which the relay and the
            # listeners kept using; left open, their threads outlive the test's event loop.
            await api.runtime.engine.dispose()
            api.runtime.engine = working
    assert response.status_code == 503
    assert response.json()["databaseOk"] is False
    assert (asked_with_head.status_code, asked_with_head.content) == (503, b"")


async def test_ops_bus_counts_what_the_bus_did(start_app: AppFactory) -> None:
    async with start_app() as api:
        owner = api.auth()
        await api.create_ticket(owner)
        await api.settled()
        counters = (await api.http.get("/ops/bus")).json()
    assert counters == {
        "published": 1,
        "delivered": 1,
        "acked": 1,
        "redelivered": 0,
        "deadLettered": 0,
        "pending": 0,
    }


async def test_ops_routes_need_the_ops_token_when_it_is_set(start_app: AppFactory, database_url: str) -> None:
    settings = make_settings(database_url, "memory://")
    guarded = Settings(
        database=settings.database,
        bus=settings.bus,
        auth=type(settings.auth)(jwt_secret=settings.auth.jwt_secret, generated_secret=False, ops_token="let-me-in"),
        modules=settings.modules,
    )
    async with start_app(settings=guarded) as api:
        for path in ("/ops/bus", "/ops/dead-letters"):
            denied = await api.http.get(path)
            assert denied.status_code == 401
            assert denied.json()["errors"][0]["message"].startswith("Not authorized")
            assert (await api.http.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (await api.http.get(path, headers={"Authorization": "Bearer let-me-in"})).status_code == 200
        replay = await api.http.post("/ops/dead-letters/nope/replay")
        assert replay.status_code == 401
        # /health stays open: load balancers do not carry tokens.
        assert (await api.http.get("/health")).status_code == 200


async def test_replaying_an_unknown_dead_letter_is_404(api: object) -> None:
    from tests.conftest import Api

    assert isinstance(api, Api)
    response = await api.http.post("/ops/dead-letters/does-not-exist/replay")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "No dead letter with id does-not-exist", "field": "id"}]}


async def test_unknown_routes_and_methods_answer_in_the_error_format(start_app: AppFactory) -> None:
    async with start_app() as api:
        missing = await api.http.get("/api/nothing-here")
        wrong_method = await api.http.patch("/api/tickets")
        too_big = await api.http.post(
            "/api/tickets", content=b"x" * 70_000, headers={**api.auth(), "content-type": "application/json"}
        )
    assert (missing.status_code, missing.json()) == (404, {"errors": [{"message": "Not found"}]})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"errors": [{"message": "Method not allowed"}]})
    assert (too_big.status_code, too_big.json()) == (413, {"errors": [{"message": "Request body is too large"}]})


async def test_openapi_schema_describes_the_api(start_app: AppFactory) -> None:
    async with start_app() as api:
        schema = (await api.http.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/api/tickets", "/api/tickets/{ticket_id}", "/api/orders", "/api/users/signup", "/health"):
        assert path in paths
    body = paths["/api/tickets"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    ticket_input = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert ticket_input["properties"]["price"]["type"] == "number"


async def test_only_the_configured_modules_are_served(start_app: AppFactory) -> None:
    async with start_app(modules=("orders",)) as api:
        assert (await api.http.get("/api/tickets")).status_code == 404
        assert (await api.http.get("/api/orders", headers=api.auth())).status_code == 200
        assert (await api.http.get("/health")).json()["modules"] == ["orders"]


async def test_a_payload_too_deep_to_decode_is_dead_lettered_at_once_and_breaks_nothing(
    start_app: AppFactory,
) -> None:
    # Valid JSON, but nested beyond what the decoder recurses into: no retry can help.
    deep = b'{"id": "x", "junk": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    async with start_app() as api:
        bus = api.runtime.bus
        feed = Feed(bus).connect()  # as when a /demo page is open
        try:
            await bus.publish(
                [Message(id=str(uuid.uuid4()), subject="ticket:updated", data=deep, occurred_at=utcnow())]
            )
            await api.settled()
            [dead] = (await api.http.get("/ops/dead-letters")).json()
            assert (dead["subject"], dead["attempts"]) == ("ticket:updated", 1)
            assert "does not match the contract" in dead["error"]
            # The group's worker is alive: the next events are handled as usual.
            owner = api.auth()
            ticket = await api.create_ticket(owner)
            await api.settled()
            response = await api.http.put(
                f"/api/tickets/{ticket['id']}", json={"title": "t", "price": 2}, headers=owner
            )
            assert response.status_code == 200
            await api.settled()
            assert (await api.counters())["deadLettered"] == 1
        finally:
            feed.disconnect()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/merge-patch+json", "application/json; v=2", None],
)
async def test_a_body_that_is_not_json_is_415_and_changes_nothing(
    start_app: AppFactory, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with start_app() as api:
        refused = await api.http.post(
            "/api/tickets", content=b'{"title": "concert", "price": 20}', headers={**api.auth(), **headers}
        )
        form = await api.http.post("/api/users/signup", data={"email": "ada@example.com", "password": "long enough"})
        listed = (await api.http.get("/api/tickets")).json()
    expected = {"errors": [{"message": "A request body must be JSON: send Content-Type: application/json"}]}
    assert (refused.status_code, refused.json()) == (415, expected)
    assert (form.status_code, form.json()) == (415, expected)
    assert listed == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
async def test_json_with_or_without_a_charset_is_read(start_app: AppFactory, content_type: str) -> None:
    async with start_app() as api:
        response = await api.http.post(
            "/api/tickets",
            content=b'{"title": "concert", "price": 20}',
            headers={**api.auth(), "content-type": content_type},
        )
    assert response.status_code == 201
