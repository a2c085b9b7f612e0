"""The story the demo tells, step by step; every step checks what it claims.

1. The seed's manual test: create a ticket, update it, and read the seed's log lines.
2. The problem: versions delivered out of order and twice break a naive copy.
3. The fix: apply only the next version; early ones are refused and come back.
4. Reservation: an order holds the ticket (409 on edit) until it is cancelled.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from app.common.events import QueueGroups, Subjects
from app.demo.naive import tell_problem
from app.demo.narrator import Narrator, money
from app.demo.target import Target
from app.live.feed import FeedEvent
from app.waiting import eventually

ORDERS = QueueGroups.ORDERS.value
EDITS = 6


def count_of(count: int, kind: str) -> str:
    return f"{count} {kind} deliver{'y' if count == 1 else 'ies'}"


def in_order(lines: list[str], expected: list[str]) -> bool:
    """Whether ``expected`` occur in ``lines`` in this order (other lines may come between)."""
    remaining = iter(lines)
    return all(any(line == wanted for line in remaining) for wanted in expected)


def applied(events: list[FeedEvent], subject: str) -> Counter[int]:
    return Counter(
        event.version
        for event in events
        if event.group == ORDERS
        and event.subject == subject
        and event.result == "applied"
        and event.version is not None
    )


class Walkthrough:
    def __init__(self, narrator: Narrator, target: Target, seed: int) -> None:
        self.n = narrator
        self.target = target
        self.seed = seed
        self.token = ""
        self.ticket: dict[str, Any] = {}
        self.order: dict[str, Any] = {}
        self.log_mark = 0
        self.order_mark = 0

    async def run(self) -> None:
        self.n.title("ticketing demo: listening for events and handling concurrency issues")
        self.n.say(f"The app: {self.target.description}")
        if self.target.logs is not None:
            self.n.say("It started as the seed's services did:")
            for line in self.target.logs.lines:
                self.n.log(line)
            self.log_mark = len(self.target.logs.lines)
        await self.n.pause()
        await self.seed_test()
        await self.n.pause()
        await self.problem()
        await self.n.pause()
        await self.fix()
        await self.n.pause()
        await self.reservation()
        await self.summary()

    # ---- HTTP with narration ------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, *, expect: int, show: bool = True) -> Any:
        response = await self.target.call(method, path, body, self.token)
        try:
            data = response.json() if response.content else None
        except ValueError:  # not JSON (a proxy's error page, say): show it as it came
            data = response.text
        if show:
            self.n.http(method, path, response.status_code, data, body)
        self.n.check(response.status_code == expect, f"{method} {path} answered {expect}", response.text)
        return data

    async def current_ticket(self) -> dict[str, Any]:
        response = await self.target.call("GET", f"/api/tickets/{self.ticket['id']}")
        ticket: dict[str, Any] = response.json()
        return ticket

    def show_events(self, events: list[FeedEvent], limit: int = 24) -> None:
        for event in events[:limit]:
            self.n.bus_event(event)
        if len(events) > limit:
            self.n.note(f"… and {len(events) - limit} more")

    # ---- 1 ------------------------------------------------------------------------------------

    async def seed_test(self) -> None:
        self.n.heading("1", "The seed's manual test: create a ticket, then update it")
        if self.target.logs is not None:
            self.n.say("The course did this with Postman and read skaffold's log. Here: real HTTP, and the app's log.")
        else:
            self.n.say("The course did this with Postman and read skaffold's log. Here: real HTTP; the app's log")
            self.n.say("is in its own terminal, so we watch its bus through its /demo/events stream.")
        email = f"demo-{secrets.token_hex(4)}@example.com"
        signed = await self.call("POST", "/api/users/signup", {"email": email, "password": "demo-password"}, expect=201)
        self.token = signed["token"]
        self.ticket = await self.call("POST", "/api/tickets", {"title": "concert", "price": 20}, expect=201)
        await self.heard(Subjects.TICKET_CREATED, 0)
        path = f"/api/tickets/{self.ticket['id']}"
        self.ticket = await self.call("PUT", path, {"title": "concert", "price": 25}, expect=200)
        self.n.check(self.ticket["version"] == 1, "the update made version 1 of the ticket")
        await self.heard(Subjects.TICKET_UPDATED, 1)

    async def heard(self, subject: Subjects, version: int) -> None:
        """Wait until the orders module has applied the event, and show how we know."""
        observer, ticket_id = self.target.observer, self.ticket["id"]

        def applied_once() -> bool:
            events = [event for event in observer.about(ticket_id) if event.subject == subject]
            return any(event.result == "published" for event in events) and applied(events, subject)[version] == 1

        await eventually(applied_once, what=f"{subject} v{version} to be applied by {ORDERS}")
        logs = self.target.logs
        if logs is None:
            self.show_events([event for event in observer.about(ticket_id) if event.subject == subject])
            self.n.check(True, f"{subject} v{version} was published by tickets and applied once by {ORDERS}")
            return
        lines = logs.lines[self.log_mark :]
        self.log_mark += len(lines)
        for line in lines:
            self.n.log(line)
        expected = [
            f"[tickets] Event published to subject {subject}",
            f"[orders] Message received: {subject} / {ORDERS}",
        ]
        if self.target.publishes_before_delivering:
            # The in-memory bus hands a message to its groups' queues and returns; the relay
            # logs before any worker runs, so the order is certain, and checked.
            self.n.check(
                in_order(lines, expected), f"the seed's two lines for {subject}, in order: published, then received"
            )
        else:
            self.n.check(set(expected) <= set(lines), f"the seed's two lines for {subject}: published, and received")
            if not in_order(lines, expected):
                self.n.note("The listener logged first: the relay logs once the broker has confirmed the publish,")
                self.n.note("and the broker may deliver before its confirmation is back.")

    # ---- 2 ------------------------------------------------------------------------------------

    async def problem(self) -> None:
        self.n.heading("2", "The problem: events arrive out of order, and some arrive twice")
        await tell_problem(self.n, self.seed, EDITS)

    # ---- 3 ------------------------------------------------------------------------------------

    async def fix(self) -> None:
        self.n.heading("3", "The fix: every event carries a version; apply only the next one")
        self.n.say("Each save bumps the ticket's version, and its event carries it. The orders module's")
        self.n.say("listener compares it with its copy (app/common/versioning.py):")
        self.n.say("  [green]the next version[/] (copy + 1) → apply it, acknowledge")
        self.n.say("  [dim]a version it already has[/]   → a duplicate: acknowledge, change nothing")
        self.n.say("  [yellow]a version further ahead[/]    → Retry: early, not failed; it waits and comes back")
        self.n.say("                                as soon as the version before it is applied")
        if self.target.chaos_on(self.seed):
            self.n.say(f"The app's own bus now gets the same chaos (seed {self.seed}): random delays, duplicates.")
        chaotic = await self.target.chaotic()
        observer, ticket_id = self.target.observer, self.ticket["id"]
        start = len(observer.events)
        log_start = len(self.target.logs.lines) if self.target.logs else 0
        versions: list[int] = []
        for _round in range(3):
            round_start = len(observer.events)
            edited = await self.edit_prices()
            versions += edited
            await eventually(
                self._all_applied(edited, round_start), what=f"{ORDERS} to apply versions {edited[0]} to {edited[-1]}"
            )
            retried = [e for e in observer.about(ticket_id, start) if e.group == ORDERS and e.result == "retried"]
            if retried or not chaotic:
                break
            self.n.note("This time every edit arrived in order; another round.")
        # Late copies (duplicates, retries) are still on their way once every version is applied:
        # "none twice" and the counts below are only true once the bus has delivered them all.
        if not await self.target.settle():
            self.n.note("Counted so far: without --ops-token, /ops/bus cannot tell when late copies are in.")
        deliveries = [
            event
            for event in observer.about(ticket_id, start)
            if event.group == ORDERS and event.subject == Subjects.TICKET_UPDATED and event.version in versions
        ]
        self.n.say(f"What {ORDERS} did with them, in the order the bus delivered:")
        self.show_events(deliveries)
        if self.target.logs is not None:
            refusals = [line for line in self.target.logs.lines[log_start:] if line.startswith("[bus] Not yet")]
            for line in refusals[:3]:
                self.n.log(line)
        counts = Counter(event.result for event in deliveries)
        applied_now = applied(deliveries, Subjects.TICKET_UPDATED)
        self.n.check(
            sorted(applied_now) == versions and set(applied_now.values()) == {1},
            f"each of versions {versions[0]} to {versions[-1]} was applied exactly once: none lost, none twice",
            f"applied: {dict(applied_now)}",
        )
        if chaotic:
            self.n.check(
                counts["retried"] > 0,
                f"{count_of(counts['retried'], 'early')} refused; each came back until it was the next version",
            )
        elif counts["retried"]:
            self.n.say(f"{count_of(counts['retried'], 'early')} on this bus; each was refused and came back.")
        else:
            self.n.say("This bus delivered every edit in order this time: nothing came early.")
        self.n.say(f"{count_of(counts['duplicate'], 'duplicate')} acknowledged without changing anything.")
        self.n.say("To see the orders module's copy, order the ticket: an order shows the copy it was made from.")
        last = self.ticket
        self.order_mark = len(observer.events)
        self.order = await self.call("POST", "/api/orders", {"ticketId": ticket_id}, expect=201)
        copy = self.order["ticket"]
        self.n.say(
            f"[bold]orders' copy[/]: [green]{money(copy['price'])} (v{copy['version']})[/]    "
            f"[bold]the ticket[/]: [green]{money(last['price'])} (v{last['version']})[/]"
        )
        self.n.check(
            (copy["price"], copy["version"]) == (last["price"], last["version"]),
            "the copy equals the ticket: same price, same version",
        )

    def _all_applied(self, versions: list[int], since: int) -> Callable[[], bool]:
        observer, ticket_id = self.target.observer, self.ticket["id"]
        return lambda: set(versions) <= set(applied(observer.about(ticket_id, since), Subjects.TICKET_UPDATED))

    async def edit_prices(self) -> list[int]:
        path = f"/api/tickets/{self.ticket['id']}"
        statuses, versions = [], []
        for _edit in range(EDITS):
            price = self.ticket["price"] + 5
            response = await self.target.call("PUT", path, {"title": "concert", "price": price}, self.token)
            statuses.append(response.status_code)
            if response.status_code == 200:
                self.ticket = response.json()
                versions.append(self.ticket["version"])
        self.n.http("PUT", f"{path} (x{EDITS})", statuses[-1], f"statuses {statuses}, versions {versions}")
        self.n.check(statuses == [200] * EDITS, f"all {EDITS} edits answered 200", f"statuses {statuses}")
        return versions

    # ---- 4 ------------------------------------------------------------------------------------

    async def reservation(self) -> None:
        self.n.heading("4", "Reservation: an order holds its ticket, and a held ticket cannot be edited")
        order_id, path = self.order["id"], f"/api/tickets/{self.ticket['id']}"
        start = self.order_mark
        self.n.say("order:created reaches the tickets module, which marks the ticket reserved by that order.")
        self.n.say("That is a save, so a new version, and ticket:updated keeps the orders module's copy current.")
        held = await eventually(self._held_by(order_id), what="the tickets module to reserve the ticket")
        self.n.check(True, f"the ticket is reserved by the order (orderId set, version {held['version']})")
        body = {"title": "concert", "price": held["price"] + 5}
        refused = await self.call("PUT", path, body, expect=409)
        self.n.check("reserved" in refused["errors"][0]["message"], "the refusal says why: the ticket is reserved")
        await self.call("DELETE", f"/api/orders/{order_id}", expect=204)
        self.n.say("order:cancelled reaches the tickets module, which releases the ticket: another version.")
        free = await eventually(self._held_by(None), what="the tickets module to release the ticket")
        self.n.check(True, f"the ticket is free again (orderId null, version {free['version']})")
        self.ticket = await self.call("PUT", path, body, expect=200)
        version, price = self.ticket["version"], self.ticket["price"]

        async def copy_caught_up() -> dict[str, Any] | None:
            order: dict[str, Any] = (await self.target.call("GET", f"/api/orders/{order_id}", token=self.token)).json()
            copy = order["ticket"]
            return order if (copy["version"], copy["price"]) == (version, price) else None

        order = await eventually(copy_caught_up, what="the orders module's copy to catch up")
        self.n.say("The events of this step:")
        self.show_events(self.target.observer.about(self.ticket["id"], start))
        self.n.check(
            order["status"] == "cancelled",
            f"the order is cancelled, and its copy of the ticket follows: {money(price)} (v{version})",
        )

    def _held_by(self, order_id: str | None) -> Callable[[], Awaitable[dict[str, Any] | None]]:
        async def check() -> dict[str, Any] | None:
            ticket = await self.current_ticket()
            return ticket if ticket["orderId"] == order_id else None

        return check

    # ---- the end ------------------------------------------------------------------------------

    async def summary(self) -> None:
        self.n.heading("✔", "The bus, by its own counters")
        await self.target.settle()
        response = await self.target.http.get("/ops/bus")
        if response.status_code == 200:
            self.n.http("GET", "/ops/bus", 200, response.json())
        else:
            self.n.note(f"/ops/bus answered {response.status_code} (pass --ops-token to see it)")
        if self.target.private_bus:
            # Only an in-process bus's dead letters are the demo's alone to speak for.
            dead = await self.call("GET", "/ops/dead-letters", expect=200, show=False)
            self.n.check(dead == [], "nothing was dead-lettered")
        self.n.console.print()
        self.n.console.print(f"[bold green]All {self.n.claims} claims held.[/]")
