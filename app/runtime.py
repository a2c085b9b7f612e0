"""What a process starts and stops around serving: the database, the bus, the relay, the listeners, the workers.

``Runtime`` is the app's lifespan; the routes reach it through the app's state, their sessions
through ``provide_session``. Nothing here knows of HTTP beyond that.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import db, migrations
from app.bus import Bus, create_bus
from app.bus import tracing as bus_tracing
from app.bus.deadletters import SqlDeadLetters
from app.bus.metrics import BusMetrics
from app.bus.relay import Relay
from app.common.auth import Tokens
from app.common.module import Module
from app.common.revocation import Revocations
from app.settings import Settings

log = logging.getLogger("ticketing")


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
        # What /metrics counts and reads: the bus's signals, its pending, the relay's backlog.
        self.metrics = BusMetrics(self.bus, self.relay)
        self.tokens = Tokens(settings.auth.jwt_secret)
        # Tokens signed out anywhere, read from the tables of the modules this process runs.
        tables = [module.revoked_tokens for module in modules if module.revoked_tokens is not None]
        self.revocations = Revocations(self.tokens, tables, plain_sessions)

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
        await self.revocations.start()
        await self.bus.connect()
        self.metrics.start()
        # Events carry their trace context only when traces were asked for (app/tracing.py).
        bus_tracing.enable(self.settings.tracing.enabled)
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
        await self.revocations.stop()
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
        await self.metrics.stop()
        bus_tracing.enable(False)
        await self.engine.dispose()


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    runtime: Runtime = state.runtime
    async with runtime.sessionmaker() as session:
        yield session
