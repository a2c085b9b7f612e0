"""Many users at once, every answer written down, and what must hold afterwards, judged from HTTP alone.

The fault tests run this load against real ``ticketing run`` processes while they kill, pause or
restart one of them (or the NATS server). Nothing here reads a database or a bus: what a user
was told (each answer) is the ledger, and what the API says afterwards is the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.waiting import eventually
from tests.conftest import Api

# A request that gets no answer within this long is written down as unanswered; the load goes on.
REQUEST_TIMEOUT = 3.0
# Pacing between one user's requests, and after a refused connection (the process is down).
THINK = 0.01
REFUSED_PAUSE = 0.05


@dataclass
class TicketRecord:
    owner: dict[str, str]
    # (version, title, price) of every answer that showed this ticket: its creation, its edits.
    acked: list[tuple[int, str, float]] = field(default_factory=list)
    # Edits that got no answer: each may or may not have been saved.
    unanswered: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class OrderRecord:
    buyer: dict[str, str]
    ticket_id: str
    cancelled: bool = False  # a DELETE was answered 204
    cancel_unanswered: bool = False


@dataclass
class Ledger:
    tickets: dict[str, TicketRecord] = field(default_factory=dict)
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    # Writes answered with a 2xx: how far the load has got.
    acknowledged: int = 0


class Spread(httpx.AsyncBaseTransport):
    """Each request to one of the instances that serve its path, in turn, as a load balancer would."""

    def __init__(self, routes: dict[str, list[str]], default: list[str], gone: set[str]) -> None:
        self.routes = routes
        self.default = default
        self.gone = gone
        self.turn = itertools.count()
        self.inner = httpx.AsyncHTTPTransport()

    def target(self, path: str) -> str:
        urls = next((urls for prefix, urls in self.routes.items() if path.startswith(prefix)), self.default)
        alive = [url for url in urls if url not in self.gone] or urls
        return alive[next(self.turn) % len(alive)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = httpx.URL(self.target(request.url.path))
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Shop:
    """The deployment as its users reach it: one URL, the orders paths routed to their own process, or
    several instances of each behind a balancer (lists of URLs); ``gone`` holds the ones killed for good."""

    def __init__(
        self, default: str | list[str], routes: dict[str, str | list[str]] | None = None, token: str | None = None
    ) -> None:
        self.default = [default] if isinstance(default, str) else default
        self.routes = {prefix: [urls] if isinstance(urls, str) else urls for prefix, urls in (routes or {}).items()}
        self.gone: set[str] = set()
        # TICKETING_OPS_TOKEN, for the /ops routes, when the processes have one.
        self.ops_headers = {"Authorization": f"Bearer {token}"} if token else {}

    @contextlib.asynccontextmanager
    async def client(self, timeout: float = REQUEST_TIMEOUT) -> AsyncIterator[httpx.AsyncClient]:
        single = not self.routes and len(self.default) == 1
        transport = None if single else Spread(self.routes, self.default, self.gone)
        base = self.default[0] if single else "http://testserver"
        # A fresh connection per request: a connection kept across a kill would only fail once more.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=timeout, limits=limits) as client:
            yield client

    @property
    def processes(self) -> list[str]:
        every = [*self.default, *(url for urls in self.routes.values() for url in urls)]
        return [url for url in dict.fromkeys(every) if url not in self.gone]


class Customer:
    """One user: sells a few tickets, edits them, buys others' tickets, cancels some orders."""

    def __init__(self, ledger: Ledger, rng: random.Random) -> None:
        self.headers = Api.auth()
        self.ledger = ledger
        self.rng = rng
        self.tickets: list[str] = []
        self.orders: list[str] = []

    async def act(self, client: httpx.AsyncClient) -> None:
        roll = self.rng.random()
        if not self.tickets or (roll < 0.15 and len(self.tickets) < 3):
            await self.create(client)
        elif roll < 0.5:
            await self.edit(client, self.rng.choice(self.tickets))
        elif roll < 0.8 or not self.orders:
            if self.ledger.tickets:
                await self.order(client, self.rng.choice(list(self.ledger.tickets)))
        else:
            await self.cancel(client, self.orders.pop(self.rng.randrange(len(self.orders))))

    async def create(self, client: httpx.AsyncClient) -> None:
        body = {"title": f"show {self.rng.randrange(10_000)}", "price": self.rng.randrange(1, 500)}
        response = await self.call(client, "POST", "/api/tickets", body)
        if response is not None and response.status_code == 201:
            ticket = response.json()
            record = TicketRecord(self.headers, [(ticket["version"], ticket["title"], ticket["price"])])
            self.ledger.tickets[ticket["id"]] = record
            self.tickets.append(ticket["id"])

    async def edit(self, client: httpx.AsyncClient, ticket_id: str) -> None:
        title, price = f"edit {self.rng.randrange(10_000)}", self.rng.randrange(100, 99_999) / 100
        record = self.ledger.tickets[ticket_id]
        response = await self.call(client, "PUT", f"/api/tickets/{ticket_id}", {"title": title, "price": price})
        if response is None:
            record.unanswered.append((title, price))
        elif response.status_code == 200:
            ticket = response.json()
            record.acked.append((ticket["version"], ticket["title"], ticket["price"]))

    async def order(self, client: httpx.AsyncClient, ticket_id: str) -> None:
        response = await self.call(client, "POST", "/api/orders", {"ticketId": ticket_id})
        if response is not None and response.status_code == 201:
            order_id = response.json()["id"]
            self.ledger.orders[order_id] = OrderRecord(self.headers, ticket_id)
            self.orders.append(order_id)

    async def cancel(self, client: httpx.AsyncClient, order_id: str) -> None:
        response = await self.call(client, "DELETE", f"/api/orders/{order_id}")
        record = self.ledger.orders[order_id]
        if response is None:
            record.cancel_unanswered = True
        elif response.status_code == 204:
            record.cancelled = True

    async def call(self, client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response | None:
        """The answer, or None when none came (refused, reset, or too slow): then nobody knows what happened."""
        route = f"{method} {path.split('/')[2]}"
        try:
            response = await client.request(method, path, json=body, headers=self.headers)
        except httpx.TransportError:
            self.ledger.answers[f"{route} unanswered"] += 1
            await asyncio.sleep(REFUSED_PAUSE)
            return None
        self.ledger.answers[f"{route} {response.status_code}"] += 1
        if response.status_code >= 500:
            self.ledger.server_errors.append(f"{method} {path}: {response.status_code} {response.text}")
        elif response.status_code < 300:
            self.ledger.acknowledged += 1
        return response


class Load:
    """``users`` customers acting at once until stopped."""

    def __init__(self, shop: Shop, users: int = 6, seed: int = 0) -> None:
        self.shop = shop
        self.ledger = Ledger()
        rng = random.Random(seed)
        self.customers = [Customer(self.ledger, random.Random(rng.random())) for _ in range(users)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._run(customer)) for customer in self.customers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, customer: Customer) -> None:
        async with self.shop.client() as client:
            while not self._stop.is_set():
                await customer.act(client)
                await asyncio.sleep(THINK)

    async def until_acknowledged(self, more: int, timeout: float = 60.0) -> None:
        """Go on until ``more`` further writes have been acknowledged."""
        target = self.ledger.acknowledged + more
        await eventually(lambda: self.ledger.acknowledged >= target, timeout=timeout, what=f"{more} more writes")


async def settle(shop: Shop, timeout: float = 120.0) -> None:
    """Until every process says nothing is pending and no request is in progress, twice in a row.

    Nothing pending: every copy has had its events. No request in progress: a process that was
    paused answers, once resumed, the requests its users gave up on meanwhile; they change things
    after the load has stopped, and the verdict must wait for them.
    """

    async def quiet(client: httpx.AsyncClient) -> bool:
        for url in shop.processes:
            response = await client.get(f"{url}/ops/bus", headers=shop.ops_headers)
            if response.status_code != 200 or response.json()["pending"]:
                return False
            if await requests_in_progress(client, url, shop.ops_headers):
                return False
        return True

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:

        async def settled() -> bool:
            try:
                return await quiet(client) and await quiet(client)
            except httpx.TransportError:
                return False

        await eventually(settled, timeout=timeout, interval=0.05, what="every process to settle (pending 0)")


async def requests_in_progress(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> float:
    """What ``/metrics`` says is being answered right now (the scrape itself not counted).

    Live streams (``/demo/events``, which a ``Recorder`` keeps open) are answered for as long as
    they are open, by design: they are not requests a settled process still owes an answer to.
    """
    response = await client.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "ticketing_http_requests_in_progress"
        for sample in family.samples
        if sample.labels.get("path") != "/demo/events"
    )


async def all_pages(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> list[Any]:
    """A whole list, following ``Link: rel="next"`` where the answer pages."""
    found: list[Any] = []
    url: str | None = path
    while url is not None:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        found += response.json()
        url = response.links.get("next", {}).get("url")
    return found


async def check_everything_converged(shop: Shop, load: Load) -> None:
    """SPEC's invariants, and nothing a user was told lost, from the outside only."""
    ledger = load.ledger
    assert ledger.server_errors == [], ledger.server_errors
    async with shop.client(timeout=30) as client:
        tickets = {ticket["id"]: ticket for ticket in await all_pages(client, "/api/tickets")}
        orders: dict[str, dict[str, Any]] = {}
        for customer in load.customers:
            for order in await all_pages(client, "/api/orders", customer.headers):
                orders[order["id"]] = order | {"buyer": customer.headers}
        await _check_nothing_acknowledged_was_lost(ledger, tickets, orders)
        live = _check_one_live_order_per_ticket(tickets, orders)
        await _check_every_copy_equals_its_ticket(client, load, tickets, live)
        for url in shop.processes:
            dead = (await client.get(f"{url}/ops/dead-letters", headers=shop.ops_headers)).json()
            assert dead == [], f"{url} dead-lettered {len(dead)}: {[d['error'] for d in dead][:5]}"


async def _check_nothing_acknowledged_was_lost(
    ledger: Ledger, tickets: dict[str, dict[str, Any]], orders: dict[str, dict[str, Any]]
) -> None:
    for ticket_id, record in ledger.tickets.items():
        assert ticket_id in tickets, f"ticket {ticket_id} was created (201) and is gone"
        ticket = tickets[ticket_id]
        version, title, price = max(record.acked)
        assert ticket["version"] >= version, f"ticket {ticket_id} went back from v{version}: {ticket}"
        possible = {(title, price), *record.unanswered}
        assert (ticket["title"], ticket["price"]) in possible, f"ticket {ticket_id}: {ticket}, last told {possible}"
    for order_id, order_record in ledger.orders.items():
        assert order_id in orders, f"order {order_id} was created (201) and is gone"
        if order_record.cancelled:
            assert orders[order_id]["status"] == "cancelled", (
                f"order {order_id} was cancelled (204): {orders[order_id]}"
            )


def _check_one_live_order_per_ticket(
    tickets: dict[str, dict[str, Any]], orders: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    live: dict[str, dict[str, Any]] = {}
    for order in orders.values():
        if order["status"] != "cancelled":
            ticket_id = order["ticket"]["id"]
            assert ticket_id not in live, (
                f"ticket {ticket_id} has two live orders: {live[ticket_id]['id']}, {order['id']}"
            )
            live[ticket_id] = order
    for ticket_id, ticket in tickets.items():
        holder = live.get(ticket_id)
        assert ticket["orderId"] == (holder["id"] if holder else None), f"ticket {ticket} is held by {holder}"
    return live


async def _check_every_copy_equals_its_ticket(
    client: httpx.AsyncClient, load: Load, tickets: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]]
) -> None:
    """An order shows the orders module's copy of its ticket: read it for every ticket, ordering the free ones.

    A new order for every free ticket also proves the listeners still work: each must reserve its ticket.
    """
    buyer = load.customers[0].headers
    placed: dict[str, str] = {}
    for ticket_id, ticket in tickets.items():
        if ticket_id in live:
            response = await client.get(f"/api/orders/{live[ticket_id]['id']}", headers=live[ticket_id]["buyer"])
        else:
            response = await client.post("/api/orders", json={"ticketId": ticket_id}, headers=buyer)
            if response.status_code == 201:
                placed[ticket_id] = response.json()["id"]
        assert response.status_code in {200, 201}, f"ticket {ticket_id}: the orders module says {response.text}"
        copy = response.json()["ticket"]
        wanted = {key: ticket[key] for key in ("id", "title", "price", "version")}
        assert copy == wanted, f"the orders module's copy {copy} differs from the ticket {wanted}"

    async def reserved() -> bool:
        for ticket_id, order_id in placed.items():
            if (await client.get(f"/api/tickets/{ticket_id}")).json()["orderId"] != order_id:
                return False
        return True

    await eventually(reserved, timeout=30, interval=0.05, what="every new order to reserve its ticket")


Fault = Callable[[], Awaitable[None]]
