"""The live view: /demo and its event stream, from the bus's signals to a real browser."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar

from app.bus import Delivery, DeliveryPolicy, Message, Outcome, Retry, signals
from app.bus.base import utcnow
from app.bus.memory import MemoryBus
from app.common.auth import CurrentUser, Tokens
from app.common.events import TicketUpdated
from app.live.feed import Feed, FeedEvent
from app.live.server import listen, serving
from app.main import Runtime, create_app
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from tests.helpers import eventually
from tests.processes import AppProcess

# Quick retries, so that nothing here waits on the default backoff.
BUS = "memory://?backoff=0.002&backoff_max=0.05&max_deliver=30"
SECRET = "live-view-tests-secret-of-decent-length"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def settings(tmp_path: Path, ops_token: str | None = None) -> Settings:
    return Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"),
        bus=BusSettings(url=BUS),
        auth=AuthSettings(jwt_secret=SECRET, generated_secret=False, ops_token=ops_token),
    )


def signed_in() -> dict[str, str]:
    user_id = str(uuid.uuid4())
    return {"Authorization": f"Bearer {Tokens(SECRET).issue(CurrentUser(user_id, 'ada@example.com'))}"}


def ticket_updated(version: int, ticket_id: str | None = None) -> Message:
    payload = TicketUpdated(
        id=ticket_id or str(uuid.uuid4()), version=version, title="t", price=Decimal(10), user_id="u", order_id=None
    )
    return Message(
        id=str(uuid.uuid4()),
        subject="ticket:updated",
        data=msgspec.json.encode(payload),
        occurred_at=utcnow(),
        source="tickets",
    )


def listening(bus: MemoryBus | Any) -> bool:
    """Whether a feed is still connected to ``bus``, or still held by the signals at all."""
    held = [*signals.published.receivers.values(), *signals.delivery_finished.receivers.values()]
    feeds = [getattr(receiver, "__self__", None) for receiver in held]
    return any(isinstance(feed, Feed) and feed.bus is bus for feed in feeds)


async def records(feed: Feed, count: int) -> list[FeedEvent]:
    got = []
    for _ in range(count):
        event = await asyncio.wait_for(feed.get(), 5)
        assert event is not None
        got.append(event)
    return got


# ---- the feed ----------------------------------------------------------------------------------


async def test_feed_tells_what_each_delivery_came_to() -> None:
    bus = MemoryBus(DeliveryPolicy(max_deliver=5, backoff=0.001))
    await bus.connect()
    attempts: list[int] = []

    async def early_then_applied_then_duplicate(delivery: Delivery) -> Outcome:
        attempts.append(delivery.attempt)
        if len(attempts) == 1:
            raise Retry("version 3 is early")
        return Outcome.APPLIED if len(attempts) == 2 else Outcome.DUPLICATE

    feed = Feed(bus).connect()
    try:
        await bus.subscribe("ticket:updated", "orders-service", early_then_applied_then_duplicate)
        message = ticket_updated(3, ticket_id="t-1")
        await bus.publish([message])
        published, retried, applied = await records(feed, 3)
        await bus.publish([message])  # the same event again, as a redelivery would bring it
        _, duplicate = await records(feed, 2)
    finally:
        feed.disconnect()
        await bus.close()
    assert (published.result, published.subject, published.version, published.source) == (
        "published",
        "ticket:updated",
        3,
        "tickets",
    )
    assert published.ticket_id == "t-1" and published.group is None
    assert (retried.result, retried.group, retried.attempt, retried.error) == (
        "retried",
        "orders-service",
        1,
        "version 3 is early",
    )
    assert (applied.result, applied.attempt) == ("applied", 2)
    assert duplicate.result == "duplicate"


async def test_feed_reports_a_dead_letter() -> None:
    bus = MemoryBus(DeliveryPolicy(max_deliver=1))
    await bus.connect()

    async def broken(_: Delivery) -> None:
        raise Retry("never ready")

    feed = Feed(bus).connect()
    try:
        await bus.subscribe("ticket:updated", "orders-service", broken)
        await bus.publish([ticket_updated(1)])
        _, dead = await records(feed, 2)
    finally:
        feed.disconnect()
        await bus.close()
    assert dead.result == "dead-lettered"


async def test_feed_hears_only_the_bus_it_watches() -> None:
    watched, other = MemoryBus(), MemoryBus()
    feed = Feed(watched).connect()
    try:
        await other.publish([ticket_updated(1)])
        mine = ticket_updated(2)
        await watched.publish([mine])
        (first,) = await records(feed, 1)
    finally:
        feed.disconnect()
    assert first.message_id == mine.id


async def test_a_slow_client_loses_the_oldest_records_and_is_told_how_many() -> None:
    bus = MemoryBus()
    feed = Feed(bus, limit=3).connect()
    try:
        await bus.publish([ticket_updated(version) for version in range(1, 6)])
        kept = await records(feed, 3)
    finally:
        feed.disconnect()
    assert [event.version for event in kept] == [3, 4, 5]
    assert feed.dropped == 2


async def test_a_disconnected_feed_leaves_no_receiver_behind() -> None:
    bus = MemoryBus()
    feed = Feed(bus).connect()
    assert listening(bus)
    feed.disconnect()
    assert not listening(bus)


# ---- the page and its stream over HTTP ------------------------------------------------------------


@dataclass
class Served:
    url: str
    app: Litestar

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The app on a real socket (Server-Sent Events need a real server), in the test's loop."""
    app = create_app(settings(tmp_path))
    async with serving(app, listen()) as url:
        yield Served(url, app)


class EventReader:
    """Server-Sent Events from a streamed response, as (event, data) pairs."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def until(self, wanted: str) -> list[tuple[str, str]]:
        """Events up to and including the first one named ``wanted``."""
        got: list[tuple[str, str]] = []
        kind, data = "message", ""
        async for line in self._lines:
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and (kind, data) != ("message", ""):
                got.append((kind, data))
                if kind == wanted:
                    return got
                kind, data = "message", ""
        raise AssertionError(f"the stream ended before a {wanted!r} event; got {got}")


async def test_demo_page_and_its_assets_are_served(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        page = await client.get("/demo")
        script = await client.get("/demo/demo.js")
        style = await client.get("/demo/demo.css")
        missing = await client.get("/demo/secrets.py")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/demo/demo.js"' in page.text
    assert script.status_code == 200 and "EventSource" in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and missing.json()["errors"]


async def test_event_stream_shows_a_ticket_reaching_the_orders_module(served: Served) -> None:
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        client.stream("GET", "/demo/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = EventReader(stream)
        ((kind, hello),) = await events.until("hello")
        assert kind == "hello"
        assert json.loads(hello) == {"bus": "in-memory bus", "modules": ["users", "tickets", "orders"]}
        created = await client.post("/api/tickets", json={"title": "concert", "price": 20}, headers=signed_in())
        ticket = created.json()
        seen: list[dict[str, Any]] = []
        while not any(event["result"] == "applied" for event in seen):
            seen += [json.loads(data) for kind, data in await events.until("bus") if kind == "bus"]
    published, applied = seen
    assert published["result"] == "published"
    assert (published["subject"], published["version"], published["source"]) == ("ticket:created", 0, "tickets")
    assert (applied["group"], applied["ticketId"], applied["attempt"]) == ("orders-service", ticket["id"], 1)
    # No prices, no users on the stream: it is for watching the flow.
    assert "price" not in applied and "userId" not in applied
    await eventually(lambda: not listening(served.runtime.bus), what="the feed to disconnect")


async def test_event_stream_needs_the_ops_token_when_one_is_set(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, ops_token="let-me-in"))
    async with serving(app, listen()) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        refused = await client.get("/demo/events")
        assert refused.status_code == 401 and refused.json()["errors"]
        async with client.stream("GET", "/demo/events", params={"token": "let-me-in"}) as stream:
            assert stream.status_code == 200
            assert (await EventReader(stream).until("hello"))[0][0] == "hello"
        async with client.stream("GET", "/demo/events", headers={"Authorization": "Bearer let-me-in"}) as stream:
            assert stream.status_code == 200
        page = await client.get("/demo")
        assert page.status_code == 200, "the page itself is public; only the stream is guarded"


async def test_shutdown_ends_open_streams_instead_of_waiting_for_them(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    runtime: Runtime = app.state.runtime
    async with httpx.AsyncClient(timeout=10) as client:
        server = serving(app, listen())
        url = await server.__aenter__()
        async with client.stream("GET", f"{url}/demo/events") as stream:
            events = EventReader(stream)
            await events.until("hello")
            started = time.monotonic()
            stopping = asyncio.create_task(server.__aexit__(None, None, None))
            rest = await events.until("bye")
            await stopping
            took = time.monotonic() - started
    assert rest[-1] == ("bye", "the server is shutting down")
    # The graceful-shutdown timeout of `serving` is 5 s: the stream did not make it wait.
    assert took < 3, f"shutdown took {took:.1f}s"
    assert not listening(runtime.bus)


@pytest.mark.slow
async def test_sigterm_stops_ticketing_run_promptly_with_a_demo_page_open(tmp_path: Path) -> None:
    app = await AppProcess({"TICKETING_JWT_SECRET": SECRET}, cwd=tmp_path).start()
    try:
        async with (
            httpx.AsyncClient(base_url=app.url, timeout=10) as client,
            client.stream("GET", "/demo/events") as stream,
        ):
            events = EventReader(stream)
            await events.until("hello")
            started = time.monotonic()
            stopping = asyncio.create_task(app.stop())
            assert (await events.until("bye"))[-1][0] == "bye"
            code = await stopping
            took = time.monotonic() - started
    finally:
        await app.stop()
    assert code in {0, -15}, app.output()
    assert took < 5, f"`ticketing run` waited {took:.1f}s for an open stream (its graceful timeout is 10 s)"
    assert "timeout graceful shutdown exceeded" not in app.output()
    assert "Application shutdown complete." in app.lines


# ---- a real browser ------------------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: apt-get install -y chromium (CI installs it in .ci/run)")
    pytest.importorskip("playwright.async_api", reason="needs playwright: pip install -e '.[test]'")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest.mark.browser
async def test_a_class_watches_create_edit_order_and_cancel_in_the_browser(served: Served, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    def row(subject: str, version: int, result: str, group: str | None = None) -> str:
        selector = f'#events tr[data-subject="{subject}"][data-version="{version}"][data-result="{result}"]'
        return selector + (f'[data-group="{group}"]' if group else "")

    published: list[Message] = []

    def keep(_bus: object, *, message: Message) -> None:
        published.append(message)

    signals.published.connect(keep, sender=served.runtime.bus, weak=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{served.url}/demo")
            await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
            await expect(page.locator("#bus")).to_have_text("in-memory bus")

            await page.click("#create")
            await expect(page.locator(row("ticket:created", 0, "published"))).to_have_count(1)
            created = page.locator(row("ticket:created", 0, "applied", "orders-service"))
            await expect(created).to_have_count(1)
            await expect(created.locator("td").nth(3)).to_have_text("tickets")  # the publisher
            ticket_id = await page.locator('#ticket dd[data-field="id"]').inner_text()
            assert await created.get_attribute("data-ticket-id") == ticket_id

            await page.fill("#price", "35")
            await page.click("#edit")
            await expect(page.locator(row("ticket:updated", 1, "applied", "orders-service"))).to_have_count(1)
            await expect(page.locator('#ticket dd[data-field="price"]')).to_have_text("35.00")

            await page.click("#order")
            await expect(page.locator(row("order:created", 0, "applied", "tickets-service"))).to_have_count(1)
            # The tickets module reserved the ticket (version 2), and the orders module's copy followed.
            await expect(page.locator(row("ticket:updated", 2, "applied", "orders-service"))).to_have_count(1)
            order_id = await page.locator('#order-state dd[data-field="id"]').inner_text()
            await expect(page.locator('#ticket dd[data-field="orderId"]')).to_have_text(order_id)
            await expect(page.locator("#in-sync")).to_have_attribute("data-sync", "true")

            await page.click("#edit")
            await expect(page.locator("#last-call")).to_have_attribute("data-status", "409")
            await expect(page.locator("#last-call")).to_contain_text("Cannot edit a reserved ticket")

            await page.click("#cancel")
            await expect(page.locator(row("order:cancelled", 1, "applied", "tickets-service"))).to_have_count(1)
            await expect(page.locator(row("ticket:updated", 3, "applied", "orders-service"))).to_have_count(1)
            await expect(page.locator('#order-state dd[data-field="status"]')).to_have_text("cancelled")
            await expect(page.locator('#ticket dd[data-field="orderId"]')).to_have_text("\N{EN DASH}")

            await page.click("#edit")
            await expect(page.locator("#last-call")).to_have_attribute("data-status", "200")
            await expect(page.locator(row("ticket:updated", 4, "applied", "orders-service"))).to_have_count(1)

            # A redelivery of an event already applied: the page shows it acknowledged as a duplicate.
            (update,) = [message for message in published if json.loads(message.data)["version"] == 4]
            await served.runtime.bus.publish([update])
            await expect(page.locator(row("ticket:updated", 4, "duplicate", "orders-service"))).to_have_count(1)
            await page.close()
        finally:
            await browser.close()
            signals.published.disconnect(keep)
    await eventually(lambda: not listening(served.runtime.bus), what="the closed page's feed to disconnect")
