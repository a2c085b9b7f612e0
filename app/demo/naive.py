"""The problem, on its own: a listener without versions, fed by a bus that shuffles and repeats.

This is the seed's "before mongoose-update-if-current": the copy is overwritten with whatever
arrives last. It runs on the real in-memory bus with chaos, and nothing else: no app, no
database, so it works the same whatever the rest of the demo runs on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
from rich.table import Table

from app.bus import Delivery, DeliveryPolicy, Message, Outcome
from app.bus.memory import Chaos, MemoryBus
from app.clock import utcnow
from app.common.events import QueueGroups, Subjects, TicketUpdated
from app.demo.narrator import Narrator, money
from app.waiting import eventually

_encode = msgspec.json.Encoder(decimal_format="number").encode
_decode = msgspec.json.Decoder(TicketUpdated).decode


@dataclass(frozen=True)
class Arrival:
    version: int
    price: Decimal
    went_back: bool  # an older version than the copy had overwrote it
    again: bool  # this version had been applied before


@dataclass
class NaiveRun:
    seed: int
    prices: list[Decimal]  # the ticket's price at versions 0, 1, 2, ...
    arrivals: list[Arrival] = field(default_factory=list)
    copy_version: int = 0
    copy_price: Decimal = Decimal(0)

    @property
    def right_version(self) -> int:
        return len(self.prices) - 1

    @property
    def right_price(self) -> Decimal:
        return self.prices[-1]

    @property
    def wrong(self) -> bool:
        return (self.copy_version, self.copy_price) != (self.right_version, self.right_price)


async def run_naive(seed: int, prices: list[Decimal], *, timeout: float = 10.0) -> NaiveRun:
    """Publish versions 1.. of one ticket at once on a chaotic bus; a naive copy takes each as it comes."""
    run = NaiveRun(seed=seed, prices=prices, copy_price=prices[0])
    seen: set[int] = set()

    async def naive(delivery: Delivery) -> Outcome:
        event = _decode(delivery.message.data)
        # The whole mistake: no look at the version before overwriting.
        went_back = event.version < run.copy_version
        run.arrivals.append(Arrival(event.version, event.price, went_back, event.version in seen))
        seen.add(event.version)
        run.copy_version, run.copy_price = event.version, event.price
        return Outcome.APPLIED

    bus = MemoryBus(DeliveryPolicy(), chaos=Chaos(seed))
    await bus.connect()
    try:
        await bus.subscribe(Subjects.TICKET_UPDATED, QueueGroups.ORDERS, naive)
        ticket_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        updates = [
            TicketUpdated(id=ticket_id, version=version, title="concert", price=price, user_id=user_id, order_id=None)
            for version, price in enumerate(prices[1:], start=1)
        ]
        await bus.publish(
            [
                Message(
                    id=str(uuid.uuid4()),
                    subject=Subjects.TICKET_UPDATED,
                    data=_encode(update),
                    occurred_at=utcnow(),
                    source="tickets",
                )
                for update in updates
            ]
        )
        await eventually(lambda: not bus.pending, timeout=timeout, what="the chaotic bus to deliver everything")
    finally:
        await bus.close()
    return run


async def first_wrong_run(seed: int, prices: list[Decimal], tries: int = 20) -> list[NaiveRun]:
    """Runs from ``seed`` on until the naive copy ends up wrong; usually the first one does.

    A shuffled sequence can end on its last version by luck; the demo says so rather than
    hide it, and shows the next seed.
    """
    runs = []
    for offset in range(tries):
        run = await run_naive(seed + offset, prices)
        runs.append(run)
        if run.wrong:
            break
    return runs


async def tell_problem(n: Narrator, seed: int, edits: int) -> NaiveRun:
    """Step 2 of the demo: the naive copy, shown arrival by arrival, and checked to be wrong."""
    prices = [Decimal(20 + 5 * version) for version in range(edits + 1)]
    n.say(
        f"{edits} quick price edits make versions 1 to {edits} of a ticket. A bus with chaos (seed {seed}) "
        "delivers each one after a random delay, some of them twice, as redeliveries on a real network do."
    )
    n.say("A naive listener copies whatever arrives, without looking at the version:")
    runs = await first_wrong_run(seed, prices)
    for lucky in runs[:-1]:
        n.note(f"seed {lucky.seed}: the shuffle happened to end on the last version (luck); next seed")
    run = runs[-1]
    table = Table(title=f"the naive copy, seed {run.seed}", title_justify="left", show_edge=False)
    for column in ("#", "arrives", "price", "the copy now"):
        table.add_column(column)
    for number, arrival in enumerate(run.arrivals, start=1):
        what = "[red]went back to an older version[/]" if arrival.went_back else "overwritten"
        if arrival.again:
            what += ", [red]applied a second time[/]"
        table.add_row(str(number), f"v{arrival.version}", money(arrival.price), what)
    n.table(table)
    backwards = sum(arrival.went_back for arrival in run.arrivals)
    n.say(
        f"[bold]naive copy[/]: [red]{money(run.copy_price)} (v{run.copy_version})[/]    "
        f"[bold]the ticket[/]: [green]{money(run.right_price)} (v{run.right_version})[/]"
    )
    n.say(f"{len(run.arrivals)} deliveries for {edits} edits; {backwards} of them moved the copy backwards.")
    n.check(run.wrong, "the naive copy ends up wrong", f"it holds {money(run.copy_price)}")
    return run
