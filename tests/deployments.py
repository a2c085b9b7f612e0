"""The app under test, deployed three ways, behind one interface the end-to-end tests use.

- ``memory``: one process (the test's own event loop), the in-memory bus;
- ``nats``: one process, NATS JetStream (a server the tests started);
- ``split``: the original two-service topology: ``users,tickets`` in one ``ticketing run``
  process and ``orders`` in another, each with its own database, one NATS between them.

Tests talk HTTP through ``http`` (in ``split`` it routes each path to the process serving it),
wait with ``settled()``, and read a module's tables through ``sessions(module)``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import db
from app.bus import outbox
from app.common.auth import CurrentUser, Tokens
from app.main import create_app
from app.runtime import Runtime
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from app.waiting import eventually
from tests.processes import AppProcess

JWT_SECRET = "tests-only-secret-of-decent-length"
# Fast retries: an early event comes back in milliseconds rather than the default 50 ms and up.
FAST_DELIVERY = "backoff=0.002&backoff_max=0.05&max_deliver=30"
FAST_BUS = f"memory://?{FAST_DELIVERY}"
ALL_MODULES = ("users", "tickets", "orders")


def nats_bus_url(server_url: str, stream: str | None = None, options: str = FAST_DELIVERY) -> str:
    """A NATS bus URL on a stream of its own, so that tests sharing a server never meet."""
    stream = stream or f"T{uuid.uuid4().hex[:12].upper()}"
    return f"{server_url}?stream={stream}&{options}"


def make_settings(database_url: str, bus_url: str, modules: tuple[str, ...] = ALL_MODULES) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url),
        bus=BusSettings(url=bus_url),
        auth=AuthSettings(jwt_secret=JWT_SECRET, generated_secret=False),
        modules=modules,
    )


class Api:
    """The app in this process; tests may also reach its runtime (engine, bus, relay) directly."""

    def __init__(self, http: httpx.AsyncClient, runtime: Runtime | None = None) -> None:
        self.http = http
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "this deployment runs in other processes"
        return self._runtime

    @property
    def in_process(self) -> bool:
        return self._runtime is not None

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

    def sessions(self, module: str) -> async_sessionmaker[AsyncSession]:
        """Sessions on the database that holds ``module``'s tables."""
        return self.runtime.sessionmaker

    async def counters(self) -> dict[str, int]:
        """``/ops/bus`` of every process, added up."""
        body: dict[str, int] = (await self.http.get("/ops/bus")).json()
        return body

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


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    # The app runs in the test's own event loop (Litestar's AsyncTestClient would run it in a
    # thread of its own), so tests may also use the app's engine and bus directly. The
    # runtime is the app's whole lifespan.
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, runtime)
    finally:
        await runtime.stop()


class Router(httpx.AsyncBaseTransport):
    """Sends each request to the process that serves its path, as an ingress would."""

    def __init__(self, routes: dict[str, str], default: str) -> None:
        self.routes = routes
        self.default = default
        self.inner = httpx.AsyncHTTPTransport()

    def target(self, path: str) -> str:
        return next((url for prefix, url in self.routes.items() if path.startswith(prefix)), self.default)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = httpx.URL(self.target(request.url.path))
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SplitApi(Api):
    """``users,tickets`` and ``orders`` as two real processes, each with its own database."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        processes: dict[str, AppProcess],
        databases: dict[str, str],
        nats_url: str,
        stream: str,
    ) -> None:
        super().__init__(http)
        self.processes = processes
        self._databases = databases
        self._sessions: dict[str, async_sessionmaker[AsyncSession]] = {}
        self._engines: list[Any] = []
        self.nats_url = nats_url
        self.stream = stream

    def sessions(self, module: str) -> async_sessionmaker[AsyncSession]:
        url = self._databases[module]
        if url not in self._sessions:
            engine = db.create_engine(url)
            self._engines.append(engine)
            self._sessions[url] = outbox.sessions(engine)
        return self._sessions[url]

    async def counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        async with httpx.AsyncClient() as client:
            for process in self.processes.values():
                for key, value in (await client.get(f"{process.url}/ops/bus")).json().items():
                    totals[key] = totals.get(key, 0) + value
        return totals

    async def settled(self, timeout: float = 30.0) -> None:
        # Each process's /ops/bus pending counts what waits on NATS for its own groups, so both
        # at 0 means settled: a message is counted by its publisher until NATS has it, then by
        # the process whose group it waits for.
        async def drained() -> bool:
            counters = await self.counters()
            if counters["pending"]:
                return False
            again = await self.counters()
            # Handled (or dead) at least as often as published, and nothing moved meanwhile.
            return again == counters and again["acked"] + again["deadLettered"] >= again["published"]

        await eventually(drained, timeout=timeout, interval=0.02, what="both processes settled")

    async def close(self) -> None:
        for engine in self._engines:
            await engine.dispose()


@asynccontextmanager
async def split(databases: tuple[str, str], nats_url: str, workdir: Path) -> AsyncIterator[SplitApi]:
    stream = f"T{uuid.uuid4().hex[:12].upper()}"
    bus_url = nats_bus_url(nats_url, stream)
    shared = {"TICKETING_BUS_URL": bus_url, "TICKETING_JWT_SECRET": JWT_SECRET}
    tickets_db, orders_db = databases
    processes = {
        "tickets": AppProcess(
            {**shared, "TICKETING_MODULES": "users,tickets", "TICKETING_DATABASE_URL": tickets_db}, cwd=workdir
        ),
        "orders": AppProcess(
            {**shared, "TICKETING_MODULES": "orders", "TICKETING_DATABASE_URL": orders_db}, cwd=workdir
        ),
    }
    async with AsyncExitStack() as stack:
        for process in processes.values():
            await process.start()
            stack.push_async_callback(process.stop)
        router = Router({"/api/orders": processes["orders"].url}, default=processes["tickets"].url)
        client = await stack.enter_async_context(httpx.AsyncClient(transport=router, base_url="http://testserver"))
        api = SplitApi(
            client,
            processes,
            {"users": tickets_db, "tickets": tickets_db, "orders": orders_db},
            nats_url,
            stream,
        )
        stack.push_async_callback(api.close)
        yield api
