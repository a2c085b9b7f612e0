"""The live view: /demo and its event stream, from the bus's signals to a real browser."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from litestar import Litestar

from app.bus import Delivery, DeliveryPolicy, Message, Outcome, Retry, signals
from app.bus.memory import MemoryBus
from app.clock import utcnow
from app.common.auth import CurrentUser, Tokens
from app.common.events import TicketUpdated
from app.live.feed import Feed, FeedEvent
from app.live.routes import QUEUE_LIMIT
from app.live.server import listen, serving
from app.main import create_app
from app.runtime import Runtime
from app.settings import AuthSettings, BusSettings, DatabaseSettings, Settings
from app.waiting import eventually
from tests.processes import AppProcess

if TYPE_CHECKING:
    from playwright.async_api import APIResponse, Browser, BrowserContext, Page, Route

# One event loop for the whole module: the browser tests share one Chromium (launching it is
# most of their cost), and Playwright's objects belong to the loop that made them.
pytestmark = pytest.mark.asyncio(loop_scope="module")

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


def noise(version: int) -> Message:
    """An event no module listens to: it only passes through the live view."""
    return Message(
        id=str(uuid.uuid4()),
        subject="test:noise",
        data=msgspec.json.encode({"version": version}),
        occurred_at=utcnow(),
        source="tests",
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
        raise RuntimeError("a bug in the listener")

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


@pytest_asyncio.fixture(loop_scope="module")
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
        assert json.loads(hello) == {
            "bus": "in-memory bus",
            "modules": ["users", "tickets", "orders"],
            "process": os.getpid(),  # the app runs in this test's process
        }
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


@pytest.fixture(scope="module")
def chromium() -> str:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: apt-get install -y chromium (CI installs it in .ci/run)")
    pytest.importorskip("playwright.async_api", reason="needs playwright: pip install -e '.[test]'")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile for each test (no cookie of another test's demo user), closed with its pages."""
    fresh = await browser.new_context()
    try:
        yield fresh
    finally:
        await fresh.close()


def row(subject: str, version: int, result: str, group: str | None = None) -> str:
    selector = f'#events tr[data-subject="{subject}"][data-version="{version}"][data-result="{result}"]'
    return selector + (f'[data-group="{group}"]' if group else "")


def card(name: str, field: str) -> str:
    return f'#{name} dd[data-field="{field}"]'


async def live_page(context: BrowserContext, url: str) -> Page:
    from playwright.async_api import expect

    page = await context.new_page()
    await page.goto(f"{url}/demo")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    return page


async def create_ticket(page: Page) -> str:
    """Click "Create ticket" and wait until the orders module has its copy; the ticket's id."""
    from playwright.async_api import expect

    shown = page.locator(card("ticket", "id"))
    before = await shown.inner_text()
    await page.click("#create")
    await expect(shown).not_to_have_text(before)
    ticket_id = await shown.inner_text()
    copied = row("ticket:created", 0, "applied", "orders-service") + f'[data-ticket-id="{ticket_id}"]'
    await expect(page.locator(copied)).to_have_count(1)
    return ticket_id


@pytest.mark.browser
async def test_a_class_watches_create_edit_order_and_cancel_in_the_browser(
    served: Served, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    published: list[Message] = []

    def keep(_bus: object, *, message: Message) -> None:
        published.append(message)

    signals.published.connect(keep, sender=served.runtime.bus, weak=False)
    try:
        page = await live_page(context, served.url)
        await expect(page.locator("#bus")).to_have_text("in-memory bus")

        await page.click("#create")
        await expect(page.locator(row("ticket:created", 0, "published"))).to_have_count(1)
        created = page.locator(row("ticket:created", 0, "applied", "orders-service"))
        await expect(created).to_have_count(1)
        await expect(created.locator("td").nth(3)).to_have_text("tickets")  # the publisher
        ticket_id = await page.locator(card("ticket", "id")).inner_text()
        assert await created.get_attribute("data-ticket-id") == ticket_id

        await page.fill("#price", "35")
        await page.click("#edit")
        await expect(page.locator(row("ticket:updated", 1, "applied", "orders-service"))).to_have_count(1)
        await expect(page.locator(card("ticket", "price"))).to_have_text("35.00")

        await page.click("#order")
        await expect(page.locator(row("order:created", 0, "applied", "tickets-service"))).to_have_count(1)
        # The tickets module reserved the ticket (version 2), and the orders module's copy followed.
        await expect(page.locator(row("ticket:updated", 2, "applied", "orders-service"))).to_have_count(1)
        order_id = await page.locator(card("order-state", "id")).inner_text()
        await expect(page.locator(card("ticket", "orderId"))).to_have_text(order_id)
        await expect(page.locator("#in-sync")).to_have_attribute("data-sync", "true")

        await page.click("#edit")
        await expect(page.locator("#last-call")).to_have_attribute("data-status", "409")
        await expect(page.locator("#last-call")).to_contain_text("Cannot edit a reserved ticket")

        await page.click("#cancel")
        await expect(page.locator(row("order:cancelled", 1, "applied", "tickets-service"))).to_have_count(1)
        await expect(page.locator(row("ticket:updated", 3, "applied", "orders-service"))).to_have_count(1)
        await expect(page.locator(card("order-state", "status"))).to_have_text("cancelled")
        await expect(page.locator(card("ticket", "orderId"))).to_have_text("\N{EN DASH}")

        await page.click("#edit")
        await expect(page.locator("#last-call")).to_have_attribute("data-status", "200")
        await expect(page.locator(row("ticket:updated", 4, "applied", "orders-service"))).to_have_count(1)

        # A redelivery of an event already applied: the page shows it acknowledged as a duplicate.
        (update,) = [message for message in published if json.loads(message.data)["version"] == 4]
        await served.runtime.bus.publish([update])
        await expect(page.locator(row("ticket:updated", 4, "duplicate", "orders-service"))).to_have_count(1)
        await page.close()
    finally:
        signals.published.disconnect(keep)
    await eventually(lambda: not listening(served.runtime.bus), what="the closed page's feed to disconnect")


@pytest.mark.browser
async def test_an_order_answered_after_its_events_shows_the_copy_in_sync(
    served: Served, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    page = await live_page(context, served.url)
    await page.click("#create")
    await expect(page.locator(row("ticket:created", 0, "applied", "orders-service"))).to_have_count(1)
    answered = asyncio.Event()

    async def late(route: Route) -> None:
        # The order's answer waits until every event it caused has been applied and shown.
        response = await route.fetch()
        await answered.wait()
        await route.fulfill(response=response)

    await page.route("**/api/orders", late)
    await page.click("#order")
    await expect(page.locator(row("ticket:updated", 1, "applied", "orders-service"))).to_have_count(1)
    await expect(page.locator(card("ticket", "version"))).to_have_text("1")  # the page read it again
    answered.set()
    await expect(page.locator(card("order-state", "status"))).to_have_text("created")
    # The answer carries the copy as it was at the order (version 0); the page must not stop there.
    await expect(page.locator("#in-sync")).to_have_attribute("data-sync", "true")
    await page.close()


@pytest.mark.browser
async def test_the_page_works_under_its_content_security_policy_and_breaks_none_of_it(
    served: Served, context: BrowserContext
) -> None:
    page = await context.new_page()
    # Every violation the browser reports, from the start (a script or style it refused, say).
    await page.add_init_script(
        """window.violations = [];
        document.addEventListener("securitypolicyviolation", (e) => window.violations.push(e.violatedDirective));"""
    )
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    answer = await page.goto(f"{served.url}/demo")
    assert answer is not None and "frame-ancestors 'none'" in (await answer.all_headers())["content-security-policy"]
    # The script ran (it opened the stream), the style applied, the API answered.
    from playwright.async_api import expect

    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await create_ticket(page)
    assert await page.evaluate("getComputedStyle(document.querySelector('.pill.applied')).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )
    assert await page.evaluate("window.violations") == [] and refused == []


@pytest.mark.browser
async def test_an_early_event_shows_as_retried_until_its_predecessor_is_applied(
    served: Served, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    page = await live_page(context, served.url)
    ticket_id = await create_ticket(page)
    # Version 2 reaches the orders module before version 1, as on a bus that reorders.
    await served.runtime.bus.publish([ticket_updated(2, ticket_id), ticket_updated(1, ticket_id)])

    early = page.locator(row("ticket:updated", 2, "retried", "orders-service"))
    await expect(early).to_have_count(1)
    await expect(early.locator(".pill")).to_have_text("retried")
    await expect(early.locator(".pill")).to_have_attribute(
        "title", re.compile(r"^came early .* \(ticket version 2 is early: have version 0, need 1 first\)$")
    )
    await expect(early.locator("td").last).to_have_text("1")  # the attempt
    await expect(page.locator(row("ticket:updated", 2, "applied", "orders-service"))).to_have_count(1)
    deliveries = page.locator('#events tr[data-subject="ticket:updated"][data-group="orders-service"]')
    # Newest first; read from the bottom: refused, its predecessor applied, then it on its second attempt.
    seen = await deliveries.evaluate_all(
        "rows => rows.map(row => [row.dataset.version, row.dataset.result, row.cells[6].textContent])"
    )
    assert seen == [["2", "applied", "2"], ["1", "applied", "1"], ["2", "retried", "1"]]


@pytest.mark.browser
async def test_the_page_hands_its_token_to_a_guarded_stream_and_says_when_it_is_refused(
    tmp_path: Path, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    app = create_app(settings(tmp_path, ops_token="let-me-in"))
    async with serving(app, listen()) as url:
        page = await context.new_page()
        await page.goto(f"{url}/demo")
        # The browser does not retry a 401: the page must not claim it is reconnecting.
        await expect(page.locator("#connection")).to_have_attribute("data-state", "refused")
        await expect(page.locator("#connection")).to_contain_text("/demo?token=")
        await page.goto(f"{url}/demo?token=let-me-out")
        await expect(page.locator("#connection")).to_have_text("refused: the server did not accept ?token=")

        await page.goto(f"{url}/demo?token=let-me-in")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        await create_ticket(page)


@pytest.mark.browser
async def test_a_page_that_falls_behind_says_how_many_events_it_missed(served: Served, context: BrowserContext) -> None:
    from playwright.async_api import expect

    page = await live_page(context, served.url)
    await expect(page.locator("#gap")).to_be_hidden()
    # Published in one go, faster than any client reads: the stream's queue keeps only the newest.
    burst = [noise(version) for version in range(QUEUE_LIMIT + 7)]
    await served.runtime.bus.publish(burst)
    await expect(page.locator("#gap")).to_have_text("This page fell behind: 7 event(s) were skipped.")
    await expect(page.locator("#gap")).to_be_visible()
    # Past the gap the stream goes on: the newest row is the burst's last event.
    newest = page.locator("#events tr").first
    await expect(newest).to_have_attribute("data-version", str(QUEUE_LIMIT + 6))


@pytest.mark.browser
async def test_after_an_interrupted_stream_the_page_says_so_and_reads_its_ticket_again(
    served: Served, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    page = await context.new_page()
    reconnection: asyncio.Future[Route] = asyncio.get_running_loop().create_future()
    requests = 0

    async def stream(route: Route) -> None:
        nonlocal requests
        requests += 1
        if requests == 1:
            # A stream that says hello and ends, as one cut by a proxy would; back soon (retry).
            hello = json.dumps({"bus": "in-memory bus", "modules": ["users", "tickets", "orders"]})
            body = f"retry: 20\nevent: hello\ndata: {hello}\n\n"
            await route.fulfill(status=200, content_type="text/event-stream", body=body)
        elif requests == 2:
            reconnection.set_result(route)  # held until the ticket has changed behind the page's back
        else:
            await route.continue_()

    await page.route("**/demo/events", stream)
    await page.goto(f"{served.url}/demo")
    held = await asyncio.wait_for(reconnection, 10)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "error")
    await expect(page.locator("#gap")).to_be_hidden()

    await page.click("#create")
    await expect(page.locator(card("ticket", "version"))).to_have_text("0")
    ticket_id = await page.locator(card("ticket", "id")).inner_text()
    # While the page has no stream, someone else orders its ticket.
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        ordered = await client.post("/api/orders", json={"ticketId": ticket_id}, headers=signed_in())
        assert ordered.status_code == 201, ordered.text
        order_id = ordered.json()["id"]

        async def reserved() -> bool:
            ticket = (await client.get(f"/api/tickets/{ticket_id}")).json()
            return bool(ticket["orderId"] == order_id)

        await eventually(reserved, what="the tickets module to reserve the ticket")

    await held.continue_()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await expect(page.locator("#gap")).to_have_text(
        "The stream was interrupted: events from while it was down are not listed."
    )
    # The events of that order never reach this page: it read its ticket again instead.
    await expect(page.locator(card("ticket", "orderId"))).to_have_text(order_id)
    await expect(page.locator(card("ticket", "version"))).to_have_text("1")


@pytest.mark.browser
async def test_a_late_answer_never_takes_the_page_back_to_older_data(served: Served, context: BrowserContext) -> None:
    from playwright.async_api import expect

    page = await live_page(context, served.url)
    # Every state of the ticket card the user saw, in order.
    await page.evaluate(
        """() => {
            window.shown = [];
            const ticket = document.getElementById("ticket");
            const field = (name) => ticket.querySelector(`dd[data-field="${name}"]`).textContent;
            new MutationObserver(() => window.shown.push([field("id"), field("version")]))
                .observe(ticket, { childList: true, subtree: true, characterData: true });
        }"""
    )
    first = await create_ticket(page)
    late: asyncio.Queue[tuple[Route, APIResponse]] = asyncio.Queue()
    hold = asyncio.Event()

    async def hold_one_read(route: Route) -> None:
        # The page's next read of the first ticket is answered now but delivered only when the
        # test says: by then a newer answer is on the page.
        if route.request.method == "GET" and hold.is_set():
            hold.clear()
            late.put_nowait((route, await route.fetch()))
        else:
            await route.fallback()

    await page.route(f"**/api/tickets/{first}", hold_one_read)
    version = page.locator(card("ticket", "version"))
    hold.set()
    await page.click("#edit")  # its events make the page read the ticket again
    await expect(version).to_have_text("1")
    route, answer = await asyncio.wait_for(late.get(), 10)
    await page.click("#edit")
    await expect(version).to_have_text("2")
    await route.fulfill(response=answer)  # older than version 2

    hold.set()
    await page.click("#edit")
    await expect(version).to_have_text("3")
    route, answer = await asyncio.wait_for(late.get(), 10)
    second = await create_ticket(page)
    await route.fulfill(response=answer)  # about the ticket the page has left

    # Edit acts on the ticket shown: the second one, whatever answers came after it.
    await page.click("#edit")
    await expect(version).to_have_text("1")
    await expect(page.locator(card("ticket", "id"))).to_have_text(second)
    shown = [(ticket, int(seen)) for ticket, seen in await page.evaluate("window.shown") if seen.isdigit()]
    # Each ticket in one stretch, its versions never going down.
    assert [ticket for ticket, _ in itertools.groupby(ticket for ticket, _ in shown)] == [first, second], shown
    for ticket in (first, second):
        versions = [seen for shown_ticket, seen in shown if shown_ticket == ticket]
        assert versions == sorted(versions), shown
