"""The app the demo talks to: started in-process for the occasion, or already running at a URL.

Either way the demo speaks HTTP to it and watches its bus. In-process it reads the app's real
log and the bus's signals; at a URL it reads the app's ``/demo/events`` stream, which carries
the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from app.bus import Bus, Delivery, Message, Verdict, signals
from app.bus.memory import Chaos, MemoryBus
from app.live.feed import FeedEvent, delivery_event, published_event
from app.live.server import listen, serving
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from app.waiting import eventually

T = TypeVar("T")

# Quick retries, so that an early event is back within milliseconds and the story keeps moving.
DEMO_BUS = "memory://?backoff=0.005&backoff_max=0.1&max_deliver=50"
# Delays up to 50 ms: longer than an edit takes over HTTP, so edits overtake each other.
CHAOS_DELAY = 0.05


class SetupError(RuntimeError):
    """The demo cannot run against this target (unreachable, missing modules, bad settings)."""


class LogCapture(logging.Handler):
    """Keeps the app's log lines (``ticketing``, ``ticketing.outbox``, ``ticketing.listeners``, …)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line if record.levelno == logging.INFO else f"{record.levelname}: {line}")


@dataclass
class Observer:
    """What the bus did, as live-view records, in the order the bus did it."""

    events: list[FeedEvent] = field(default_factory=list)

    def about(self, ticket_id: str, since: int = 0) -> list[FeedEvent]:
        return [event for event in self.events[since:] if event.ticket_id == ticket_id]


@dataclass
class Target:
    url: str
    http: httpx.AsyncClient
    observer: Observer
    description: str
    logs: LogCapture | None = None
    bus: Bus | None = None
    owns_bus: bool = False

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.request(method, path, json=body, headers=headers)

    def chaos_on(self, seed: int) -> bool:
        """Give the in-process bus the chaos of ``seed``; only on the bus the demo chose itself."""
        if self.owns_bus and isinstance(self.bus, MemoryBus) and self.bus.chaos is None:
            # The in-memory bus reads ``chaos`` for every message it offers, so this takes
            # effect from the next event on: a calm start, then the misbehaving network.
            self.bus.chaos = Chaos(seed, max_delay=CHAOS_DELAY)
            return True
        return False

    @property
    def publishes_before_delivering(self) -> bool:
        """Whether the relay's "published" line always comes before a listener's "received"."""
        return isinstance(self.bus, MemoryBus)

    @property
    def private_bus(self) -> bool:
        """Whether the bus is this process's alone (in memory), so its dead letters are ours."""
        return isinstance(self.bus, MemoryBus)

    async def settle(self, timeout: float = 30.0) -> bool:
        """Wait until the app's bus has nothing in flight (``pending`` 0); False if ``/ops/bus`` is closed to us."""

        async def idle() -> bool | None:
            response = await self.http.get("/ops/bus")
            if response.status_code != 200:
                return False
            return True if response.json()["pending"] == 0 else None

        return bool(await eventually(idle, timeout=timeout, what="the app's bus to settle (pending 0 in /ops/bus)"))

    async def chaotic(self) -> bool:
        if self.bus is not None:
            return isinstance(self.bus, MemoryBus) and self.bus.chaos is not None
        health = (await self.http.get("/health")).json()
        return "chaos seed" in str(health.get("bus", ""))


@contextlib.asynccontextmanager
async def in_process(bus_url: str | None) -> AsyncIterator[Target]:
    """The whole app on a free port in this event loop: SQLite in a temporary folder."""
    from app.main import create_app
    from app.settings import SettingsError

    logger = logging.getLogger("ticketing")
    capture = LogCapture()
    level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory(prefix="ticketing-demo-") as folder:
            database = Path(folder) / "demo.db"
            settings = Settings(
                database=DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"),
                bus=BusSettings(url=bus_url or DEMO_BUS),
                auth=AuthSettings(jwt_secret=secrets.token_urlsafe(32), generated_secret=False),
            )
            sock = listen()
            try:
                app = create_app(settings, listening_on=sock.getsockname()[1])
            except SettingsError as exc:
                sock.close()
                raise SetupError(str(exc)) from None
            runtime = app.state.runtime
            observer = Observer()

            def on_published(_bus: Bus, *, message: Message) -> None:
                observer.events.append(published_event(message))

            def on_delivery(_bus: Bus, *, delivery: Delivery, verdict: Verdict) -> None:
                observer.events.append(delivery_event(delivery, verdict))

            # sender=the bus: only this app's bus is heard, whatever else runs in the process.
            signals.published.connect(on_published, sender=runtime.bus, weak=False)
            signals.delivery_finished.connect(on_delivery, sender=runtime.bus, weak=False)
            try:
                async with serving(app, sock) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
                    yield Target(
                        url=url,
                        http=http,
                        observer=observer,
                        description=f"in-process on {url}, SQLite {database}, {runtime.bus.describe()}",
                        logs=capture,
                        bus=runtime.bus,
                        owns_bus=bus_url is None,
                    )
            finally:
                # From every sender: blinker forgets a strongly held receiver only then.
                signals.published.disconnect(on_published)
                signals.delivery_finished.disconnect(on_delivery)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


@contextlib.asynccontextmanager
async def remote(url: str, ops_token: str | None) -> AsyncIterator[Target]:
    """An app someone else started; the demo watches its bus through ``/demo/events``."""
    headers = {"Authorization": f"Bearer {ops_token}"} if ops_token else {}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30, headers=headers) as http:
        try:
            health = await http.get("/health")
        except httpx.HTTPError as exc:
            raise SetupError(f"cannot reach {url}: {exc}") from None
        if health.status_code != 200:
            raise SetupError(f"{url}/health answered {health.status_code}: {health.text}")
        info = health.json()
        missing = {"users", "tickets", "orders"} - set(info.get("modules", []))
        if missing:
            raise SetupError(f"{url} does not run {', '.join(sorted(missing))}; the demo needs all three modules")
        observer = Observer()
        hello = asyncio.Event()
        reader = asyncio.create_task(_read_stream(http, observer, hello), name="demo-events")
        try:
            try:
                await asyncio.wait_for(_first(hello, reader), 10)
            except TimeoutError:
                raise SetupError(f"{url}/demo/events said nothing within 10 s; is it the ticketing app?") from None
            yield Target(url=url, http=http, observer=observer, description=f"{url}, {info.get('bus')}")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _first(hello: asyncio.Event, reader: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(hello.wait())
    done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if reader in done:
        reader.result()  # raises the reason the stream ended
        raise SetupError("the app closed /demo/events at once")


async def server_sent_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """Server-Sent Events as (event, data): ``event:`` and ``data:`` lines, a blank line ends one."""
    kind, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line:
            yield kind, data
            kind, data = "message", ""


async def _read_stream(http: httpx.AsyncClient, observer: Observer, hello: asyncio.Event) -> None:
    async with http.stream("GET", "/demo/events", timeout=httpx.Timeout(10, read=None)) as response:
        if response.status_code != 200:
            hint = " (pass --ops-token, or set TICKETING_OPS_TOKEN)" if response.status_code == 401 else ""
            raise SetupError(f"/demo/events answered {response.status_code}{hint}")
        async for kind, data in server_sent_events(response):
            if kind == "hello":
                hello.set()
            elif kind == "bus" and data:
                observer.events.append(msgspec.json.decode(data, type=FeedEvent))
