from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
import pytest
from argon2 import PasswordHasher, profiles
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import db, migrations
from app.bus import Delivery, Message, Outcome, outbox
from app.bus.outbox import OutboxRecord, encode
from app.clock import utcnow
from app.common.events import Event, QueueGroups
from app.common.module import Listener
from app.runtime import load_module
from app.settings import KNOWN_MODULES
from app.users import service as users_service
from tests.deployments import FAST_BUS, JWT_SECRET, Api, in_process, make_settings, nats_bus_url, split
from tests.nats_server import nats_cluster, nats_server, own_nats_server

__all__ = ["JWT_SECRET", "Api", "make_settings", "nats_cluster", "nats_server", "own_nats_server"]

STRICT = os.environ.get("TICKETING_TEST_STRICT") == "1"
T = TypeVar("T")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported lives until the end: kept out of the garbage collector's way.

    The libraries and test modules make a heap of long-lived objects that each full collection
    would walk again; frozen, collections look at what the tests themselves allocate.
    """
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``TICKETING_TEST_STRICT=1`` (CI) a test that skips is a failure: nothing may be left out.

    A test's settle times go with its report, for the summary (see ``settle_times``).
    """
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" and _SETTLED.keys() - _SENT:
        # What this test settled goes with its report (to the controller, under pytest-xdist).
        new = {name: seconds for name, seconds in _SETTLED.items() if name not in _SENT}
        _SENT.update(new)
        report.user_properties = [
            *report.user_properties,
            *((f"{_SETTLED_PROPERTY}{name}", seconds) for name, seconds in new.items()),
        ]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under TICKETING_TEST_STRICT=1, which allows no skips: {reason}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``postgres`` needs TICKETING_TEST_POSTGRES_URL: without it, it skips, and says why."""
    if item.get_closest_marker("postgres") and POSTGRES_URL is None:
        pytest.skip("set TICKETING_TEST_POSTGRES_URL=postgresql+asyncpg://... to run the PostgreSQL tests")


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at the library's cheapest parameters: the same code, without its deliberate cost.

    Production parameters take tens of milliseconds of CPU per hash on purpose, which made the
    sign-up tests the slowest of the in-memory suite. A test marked ``production_hashing`` keeps
    them; processes the tests start (``ticketing run``) always use them.
    """
    if request.node.get_closest_marker("production_hashing"):
        return
    cheap = PasswordHasher.from_parameters(profiles.CHEAPEST)
    monkeypatch.setattr(users_service, "_hasher", cheap)
    monkeypatch.setattr(users_service, "_DUMMY_HASH", cheap.hash("not-a-real-password"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of the test's own, not created yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'ticketing.db'}"


def all_histories() -> list[migrations.History]:
    return migrations.histories([load_module(name) for name in KNOWN_MODULES])


async def migrate(url: str) -> None:
    """Bring ``url``'s database to every history's head, as ``ticketing db upgrade`` would."""
    engine = db.create_engine(url)
    try:
        await migrations.upgrade(engine, all_histories())
    finally:
        await engine.dispose()


POSTGRES_URL = os.environ.get("TICKETING_TEST_POSTGRES_URL")


def _in_a_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    # Session-wide set-up runs outside any test's event loop.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every history at its head, migrated once; each test's database is a copy of it."""
    path = tmp_path_factory.mktemp("template") / "ticketing.db"
    _in_a_thread(migrate(f"sqlite+aiosqlite:///{path}"))
    # A file that is whole on its own, with no write-ahead log beside it to copy as well.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database with every history at its head, migrated once; each test's database is a copy of it."""
    if not POSTGRES_URL:
        pytest.skip("set TICKETING_TEST_POSTGRES_URL=postgresql+asyncpg://... to run the PostgreSQL tests")
    name = f"ticketing_template_{uuid.uuid4().hex[:12]}"

    async def build() -> None:
        async with _admin(POSTGRES_URL) as admin:
            await admin.execute(f'CREATE DATABASE "{name}"')
        await migrate(make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False))

    async def drop() -> None:
        async with _admin(POSTGRES_URL) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    _in_a_thread(build())
    yield name
    _in_a_thread(drop())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Each test gets a database of its own, migrated: a SQLite file, or a PostgreSQL database (copies of templates)."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "ticketing.db")
        yield sqlite_url
        return
    template: str = request.getfixturevalue("postgres_template")
    assert POSTGRES_URL is not None
    async with postgres_database(POSTGRES_URL, template) as url:
        yield url


@asynccontextmanager
async def _admin(server_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def postgres_database(server_url: str, template: str | None = None) -> AsyncIterator[str]:
    """A new database on the server (a copy of ``template``), dropped afterwards even if connections linger."""
    name = f"ticketing_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    async with _admin(server_url) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bus_url() -> str:
    return FAST_BUS


AppFactory = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a database holding every module's tables, with no relay: staged events stay in the outbox."""
    engine = db.create_engine(database_url)
    yield outbox.sessions(engine)
    await engine.dispose()


def deliveries(listener: Listener[Any], *events: Event) -> list[Delivery]:
    """Events as the bus hands them to ``listener``: first deliveries, each with an id of its own."""

    def delivery(event: Event) -> Delivery:
        message = Message(id=str(uuid.uuid4()), subject=listener.subject, data=encode(event), occurred_at=utcnow())
        return Delivery(message, listener.group, 1)

    return [delivery(event) for event in events]


async def deliver(listener: Listener[Any], event: Event, sessions: async_sessionmaker[AsyncSession]) -> Outcome:
    """Hand one event to a listener as the bus would; returns what the bus would learn (ack) or raises Retry."""
    module = "tickets" if listener.group == QueueGroups.TICKETS else "orders"
    message = Message(
        id=str(uuid.uuid4()), subject=listener.subject, data=encode(event), occurred_at=utcnow(), source="tests"
    )
    outcome = await listener.bind(module, sessions)(Delivery(message, listener.group, 1))
    assert outcome is not None, "listeners always say what they did"
    return outcome


async def staged_events(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, dict[str, Any]]]:
    """What the outbox holds, oldest first, as (subject, payload)."""
    async with sessions() as session:
        rows = await session.scalars(select(OutboxRecord).order_by(OutboxRecord.occurred_at))
        return [(row.subject, msgspec.json.decode(row.payload)) for row in rows]


DEPLOYMENTS = [
    "memory",
    pytest.param("nats", marks=pytest.mark.nats),
    pytest.param("split", marks=[pytest.mark.nats, pytest.mark.slow]),
]


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> str:
    """How the app under test is deployed (see tests/deployments.py); in-process memory unless parametrised."""
    return str(getattr(request, "param", "memory"))


@pytest.fixture
def start_app(
    request: pytest.FixtureRequest, deployment: str, database_url: str, bus_url: str, tmp_path: Path
) -> AppFactory:
    nats_url = request.getfixturevalue("nats_server").url if deployment in {"nats", "split"} else None
    template = request.getfixturevalue("postgres_template") if database_url.startswith("postgresql") else None

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        if deployment == "split":
            assert nats_url is not None
            async with AsyncExitStack() as stack:
                if template is None:
                    orders_database = f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
                else:
                    assert POSTGRES_URL is not None
                    orders_database = await stack.enter_async_context(postgres_database(POSTGRES_URL, template))
                yield await stack.enter_async_context(split((database_url, orders_database), nats_url, tmp_path))
            return
        if nats_url is not None:
            overrides["bus_url"] = nats_bus_url(nats_url)
        settings = overrides.pop("settings", None) or make_settings(
            overrides.pop("database_url", database_url), overrides.pop("bus_url", bus_url), **overrides
        )
        async with in_process(settings) as api:
            yield api

    return start


@pytest.fixture
async def api(start_app: AppFactory) -> AsyncIterator[Api]:
    async with start_app() as api:
        yield api


# How long each fault took to settle, printed at the end of the run (the figures the docs quote).
# The tests of this process fill _SETTLED; each figure rides on its test's report, so that the
# summary has them all whether the tests ran here or in pytest-xdist's workers.
_SETTLED: dict[str, float] = {}
_SENT: set[str] = set()
_REPORTED: dict[str, float] = {}
_SETTLED_PROPERTY = "settled: "
# Tests that drive real processes under load and time them: one after the other on one worker
# (their seeds count the figures before them, and each other's load would skew what they time).
_SERIAL_GROUP = "settle-times"


@pytest.fixture(scope="session")
def settle_times() -> dict[str, float]:
    return _SETTLED


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), the fault tests stay together on one worker, in order."""
    for item in items:
        if item.get_closest_marker("faults") or "settle_times" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(_SERIAL_GROUP))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if isinstance(name, str) and name.startswith(_SETTLED_PROPERTY) and isinstance(value, float):
            _REPORTED[name.removeprefix(_SETTLED_PROPERTY)] = value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORTED:
        terminalreporter.section("faults: seconds from the last answer of the load to every process settled")
        for name, seconds in sorted(_REPORTED.items()):
            terminalreporter.write_line(f"{name:40} {seconds:6.2f}")
