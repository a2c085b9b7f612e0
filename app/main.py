"""The one place where settings, database, bus and modules are wired into a Litestar app."""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import asyncapi, db, live, migrations, ops
from app.bus import Bus, create_bus
from app.bus.deadletters import SqlDeadLetters
from app.bus.relay import Relay
from app.common import openapi
from app.common.auth import Tokens, provide_user
from app.common.body import DecimalAsNumber, JSONBodiesOnly
from app.common.errors import exception_handlers
from app.common.module import Module
from app.settings import Settings

log = logging.getLogger("ticketing")
# RFC 7518 asks HS256 keys to be at least as long as the hash: 32 bytes.
MIN_SECRET_BYTES = 32


def load_module(name: str) -> Module:
    module: Module = importlib.import_module(f"app.{name}").module
    return module


class Runtime:
    """What the app starts and stops in its lifespan: engine, bus, relay, listeners."""

    def __init__(self, settings: Settings, modules: list[Module], listening_on: int | None = None) -> None:
        self.settings = settings
        self.modules = modules
        self.listening_on = listening_on
        self.workers: list[asyncio.Task[None]] = []
        # Built now so that a bad URL fails at start-up, but nothing connects until start().
        self.engine: AsyncEngine = db.create_engine(settings.database.url)
        plain_sessions = db.create_sessionmaker(self.engine)
        self.bus: Bus = create_bus(settings.bus.url, dead_letters=SqlDeadLetters(plain_sessions))
        self.relay = Relay(plain_sessions, self.bus)
        # The modules' sessions: what each commits goes to the relay, and on to the bus.
        self.sessionmaker: async_sessionmaker[AsyncSession] = self.relay.sessions(self.engine)

    @asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        try:
            await self.start()
        except BaseException:
            # Undo whatever part of the start went through (a bus connection, its tasks).
            await self.stop()
            raise
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        if self.settings.database.migrate == "auto":
            for upgraded in await migrations.upgrade(self.engine, migrations.histories(self.modules)):
                if upgraded.changed:
                    log.info("[schema] %s", upgraded)
        await self.bus.connect()
        for module in self.modules:
            log.info("[%s] Connected to %s", module.name, self.bus.kind)
            log.info("[%s] Connected to %s", module.name, db.describe(self.engine))
        # Listeners first: events an earlier run left in the outbox are then published to
        # groups already listening, and count as pending until they have handled them.
        for module in self.modules:
            for listener in module.listeners:
                handler = listener.bind(module.name, self.sessionmaker)
                await self.bus.subscribe(listener.subject, listener.group, handler)
        await self.relay.start()
        self.workers = [
            asyncio.create_task(
                worker(self.sessionmaker), name=f"{module.name}:{getattr(worker, '__name__', 'worker')}"
            )
            for module in self.modules
            for worker in module.workers
        ]
        if self.listening_on is not None:
            for module in self.modules:
                log.info("[%s] Listening on port %d", module.name, self.listening_on)

    async def stop(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        # Take no more messages and let the handlers in flight finish; then publish everything
        # committed, theirs included, while the bus can still publish; then close.
        await self.bus.stop_consuming()
        await self.relay.stop()
        await self.bus.close()
        # Record what the last handlers settled.
        await self.relay.close()
        await self.engine.dispose()


class StartupError(RuntimeError):
    """The app cannot start, for a reason one sentence can tell."""


async def preflight(settings: Settings) -> None:
    """Fail fast, with one clear sentence, when the database or the bus cannot be reached, or the
    schema is one the app cannot run on (see ``migrations.verify``).

    Run before serving: an app that fails in its lifespan is reported by the ASGI server with
    tracebacks, which bury the one line that matters.
    """
    engine = db.create_engine(settings.database.url)
    try:
        await reach_database(engine)
        histories = migrations.histories([load_module(name) for name in settings.modules])
        await migrations.verify(engine, histories, settings.database.migrate)
    except migrations.MigrationError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        await engine.dispose()
    bus = create_bus(settings.bus.url)
    try:
        await bus.connect()
    except Exception as exc:
        raise StartupError(f"cannot reach the bus, {bus.describe()}: {_reason(exc)}") from exc
    finally:
        await bus.close()


async def reach_database(engine: AsyncEngine) -> None:
    """Raise StartupError, in one sentence, when ``engine``'s database does not answer."""
    threads_before = set(threading.enumerate())
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        await _let_driver_threads_finish(threads_before)
        raise StartupError(f"cannot reach the database {db.describe(engine)}: {_reason(exc)}") from exc


async def _let_driver_threads_finish(threads_before: set[threading.Thread], timeout: float = 5.0) -> None:
    """Wait for the worker threads a failed connection attempt left running.

    aiosqlite answers a failed connect by queueing its worker thread's stop without waiting for
    it; the thread's last callback then meets the caller's event loop closed and prints a
    traceback under the one-line error (omnilib/aiosqlite#241). asyncio's own executor threads
    (``asyncio_N``) live until the loop shuts them down, so they are not waited for.
    """
    for thread in set(threading.enumerate()) - threads_before:
        if not thread.name.startswith("asyncio_"):
            await asyncio.to_thread(thread.join, timeout)


def _reason(exc: BaseException) -> str:
    # The driver's own words, without SQLAlchemy's wrapping and links.
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    runtime: Runtime = state.runtime
    async with runtime.sessionmaker() as session:
        yield session


def create_app(settings: Settings | None = None, *, listening_on: int | None = None) -> Litestar:
    """The app for ``settings`` (default: from the environment); nothing connects until it starts."""
    settings = settings or Settings.from_env()
    if settings.auth.generated_secret:
        log.warning(
            "TICKETING_JWT_SECRET is not set: using a random key, so sign-ins end at restart "
            "and other processes will not accept this one's tokens"
        )
    elif len(settings.auth.jwt_secret.encode()) < MIN_SECRET_BYTES:
        log.warning(
            "TICKETING_JWT_SECRET is shorter than %d bytes: tokens signed with it are easier to forge",
            MIN_SECRET_BYTES,
        )
    modules = [load_module(name) for name in settings.modules]
    runtime = Runtime(settings, modules, listening_on)
    return Litestar(
        route_handlers=[
            *(route for module in modules for route in module.routes),
            *ops.routes,
            *live.routes,
            *asyncapi.routes,
        ],
        lifespan=[runtime.lifespan],
        dependencies={"session": Provide(provide_session), "user": Provide(provide_user)},
        exception_handlers=exception_handlers,
        plugins=[DecimalAsNumber()],
        openapi_config=OpenAPIConfig(
            title="ticketing",
            version="0.1.0",
            description="Tickets and orders kept consistent by versioned events.",
            components=openapi.COMPONENTS,
            use_handler_docstrings=True,
        ),
        middleware=[JSONBodiesOnly()],
        state=State({"settings": settings, "runtime": runtime, "tokens": Tokens(settings.auth.jwt_secret)}),
        # Logging is the process's business (``ticketing run`` sets it up), not the app's.
        logging_config=None,
        request_max_body_size=64 * 1024,
        debug=False,
    )
