from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.common.auth import CurrentUser, Tokens
from app.main import Runtime, create_app
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from tests.helpers import eventually

JWT_SECRET = "tests-only-secret-of-decent-length"
STRICT = os.environ.get("TICKETING_TEST_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``TICKETING_TEST_STRICT=1`` (CI) a test that skips is a failure: nothing may be left out."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under TICKETING_TEST_STRICT=1, which allows no skips: {reason}"


# Fast retries: an early event comes back in milliseconds rather than the default 50 ms and up.
FAST_BUS = "memory://?backoff=0.002&backoff_max=0.05&max_deliver=30"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ticketing.db'}"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def bus_url() -> str:
    return FAST_BUS


def make_settings(
    database_url: str, bus_url: str, modules: tuple[str, ...] = ("users", "tickets", "orders")
) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url),
        bus=BusSettings(url=bus_url),
        auth=AuthSettings(jwt_secret=JWT_SECRET, generated_secret=False),
        modules=modules,
    )


class Api:
    """An HTTP client for the app under test, with the shortcuts the tests keep needing."""

    def __init__(self, client: AsyncTestClient[Litestar]) -> None:
        self.http = client
        self.app = client.app
        self.runtime: Runtime = client.app.state.runtime

    @staticmethod
    def auth(user_id: str | None = None, email: str | None = None) -> dict[str, str]:
        """Headers for a signed-in user, like the course's ``global.signin()``: no sign-up needed."""
        user_id = user_id or str(uuid.uuid4())
        token = Tokens(JWT_SECRET).issue(CurrentUser(user_id, email or f"{user_id[:8]}@example.com"))
        return {"Authorization": f"Bearer {token}"}

    async def settled(self, timeout: float = 20.0) -> None:
        """Wait until every committed event has been handled by every group (pending == 0)."""
        runtime = self.runtime
        await eventually(lambda: runtime.bus.pending + runtime.relay.backlog == 0, timeout=timeout, what="settled")

    async def create_ticket(self, headers: dict[str, str], title: str = "concert", price: float = 20) -> dict[str, Any]:
        response = await self.http.post("/api/tickets", json={"title": title, "price": price}, headers=headers)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def order(self, headers: dict[str, str], ticket_id: str) -> dict[str, Any]:
        response = await self.http.post("/api/orders", json={"ticketId": ticket_id}, headers=headers)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


AppFactory = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def start_app(database_url: str, bus_url: str) -> AppFactory:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        settings = overrides.pop("settings", None) or make_settings(
            overrides.pop("database_url", database_url), overrides.pop("bus_url", bus_url), **overrides
        )
        async with AsyncTestClient(app=create_app(settings)) as client:
            yield Api(client)

    return start


@pytest.fixture
async def api(start_app: AppFactory) -> AsyncIterator[Api]:
    async with start_app() as api:
        yield api
