"""The bus contract: every backend must pass every test here, unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from app.bus import Bus, BusClosedError, DeadLetter, Delivery, DeliveryPolicy, Message, Outcome, Retry, Unprocessable
from app.clock import utcnow
from app.waiting import eventually
from tests.bus.conftest import DURABLE_BACKENDS, FAST, Harness

# A backoff far longer than the tests wait: only a wake-up can bring an early delivery back in time.
SLOW_RETRIES = DeliveryPolicy(max_deliver=4, backoff=3.0, backoff_max=3.0)
# Early deliveries give up after 1.5 s (NATS: longer than its ack_wait of 1 s, as it must be);
# in memory, where no redelivery timer has to be outlasted, after 0.4 s.
SHORT_WAIT = DeliveryPolicy(max_deliver=2, backoff=0.01, backoff_max=0.05, max_wait=1.5)
SHORT_WAIT_IN_MEMORY = dataclasses.replace(SHORT_WAIT, max_wait=0.4)


def message(subject: str, body: str, source: str = "tests") -> Message:
    return Message(id=str(uuid.uuid4()), subject=subject, data=body.encode(), occurred_at=utcnow(), source=source)


def unique(name: str) -> str:
    # Subjects unique per test, so backends with a shared broker never mix tests up.
    return f"{name}-{uuid.uuid4().hex[:8]}:created"


async def test_message_crosses_as_bytes_with_its_id_time_and_source(bus: Bus) -> None:
    subject = unique("bytes")
    got: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)

    await bus.subscribe(subject, "g", handler)
    sent = message(subject, '{"price": 10.5, "title": "café"}', source="tickets")
    await bus.publish([sent])
    await eventually(lambda: got, what="the delivery")

    received = got[0].message
    assert isinstance(received.data, bytes)
    assert received.data == sent.data
    assert (received.id, received.subject, received.source) == (sent.id, subject, "tickets")
    assert received.occurred_at == sent.occurred_at
    assert (got[0].group, got[0].attempt) == ("g", 1)


async def test_every_group_gets_every_message_and_one_member_handles_each(harness: Harness) -> None:
    subject = unique("fanout")
    handled: dict[str, list[str]] = defaultdict(list)

    def member(name: str):  # type: ignore[no-untyped-def]
        async def handler(delivery: Delivery) -> None:
            await asyncio.sleep(0.001)  # some work, so that members overlap
            handled[name].append(delivery.message.id)

        return handler

    # Three members of "orders" on three connections, as three processes would be.
    for index in range(3):
        connection = await harness.connect()
        await connection.subscribe(subject, "orders", member(f"orders-{index}"))
    await (await harness.connect()).subscribe(subject, "tickets", member("tickets-0"))

    publisher = await harness.connect()
    sent = [message(subject, str(n)) for n in range(60)]
    # Publishers race each other too.
    await asyncio.gather(*(publisher.publish(sent[n : n + 10]) for n in range(0, 60, 10)))

    def orders_ids() -> list[str]:
        return [i for name, ids in handled.items() if name.startswith("orders") for i in ids]

    await eventually(lambda: len(orders_ids()) >= 60 and len(handled["tickets-0"]) >= 60)
    assert Counter(orders_ids()) == Counter(m.id for m in sent), "each message handled once by orders"
    assert sorted(handled["tickets-0"]) == sorted(m.id for m in sent)
    assert sum(1 for name in handled if name.startswith("orders") and handled[name]) >= 2


async def test_subscribers_get_only_their_subject(bus: Bus) -> None:
    mine, other = unique("mine"), unique("other")
    got: list[str] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.subject)

    await bus.subscribe(mine, "g", handler)
    await bus.publish([message(other, "x"), message(mine, "y")])
    await eventually(lambda: got)
    await eventually(lambda: bus.pending == 0)
    assert got == [mine]


async def test_one_member_receives_in_publish_order(bus: Bus) -> None:
    subject = unique("order")
    got: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.data)

    await bus.subscribe(subject, "g", handler)
    await bus.publish([message(subject, str(n)) for n in range(25)])
    await eventually(lambda: len(got) == 25)
    assert got == [str(n).encode() for n in range(25)]


async def test_a_handler_that_raises_gets_the_message_again_after_a_backoff(bus: Bus) -> None:
    subject = unique("flaky")
    attempts: list[tuple[int, float]] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append((delivery.attempt, time.monotonic()))
        if delivery.attempt < 3:
            raise RuntimeError("database is down")

    await bus.subscribe(subject, "g", handler)
    before = (bus.stats.acked, bus.stats.redelivered)
    await bus.publish([message(subject, "x")])
    await eventually(lambda: bus.pending == 0 and len(attempts) == 3)

    assert [attempt for attempt, _ in attempts] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    # Backoff doubles: at least the policy's delay before each retry (timers never fire early).
    assert gaps[0] >= FAST.delay(1) * 0.9
    assert gaps[1] >= FAST.delay(2) * 0.9
    assert (bus.stats.acked - before[0], bus.stats.redelivered - before[1]) == (1, 2)
    assert await bus.dead_letters() == []


async def test_retry_comes_back_later_without_logging_an_error(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    subject = unique("early")
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> Outcome:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise Retry("version 2 waits for version 1")
        return Outcome.APPLIED

    await bus.subscribe(subject, "g", handler)
    with caplog.at_level(logging.INFO):
        await bus.publish([message(subject, "x")])
        await eventually(lambda: bus.pending == 0 and attempts == [1, 2])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_poison_message_is_dead_lettered_logged_and_does_not_block_the_rest(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    subject = unique("poison")
    good: list[bytes] = []
    poison_attempts: list[int] = []
    cured = False

    async def handler(delivery: Delivery) -> None:
        if delivery.message.data == b"poison" and not cured:
            poison_attempts.append(delivery.attempt)
            raise ValueError("cannot handle this")
        good.append(delivery.message.data)

    await bus.subscribe(subject, "workers", handler)
    with caplog.at_level(logging.INFO):
        await bus.publish([message(subject, "poison"), *(message(subject, f"ok-{n}") for n in range(5))])
        # The messages behind the poison are handled while it is still being retried.
        await eventually(lambda: len(good) == 5)
        assert len(poison_attempts) < FAST.max_deliver
        await eventually(lambda: bus.pending == 0)

    assert poison_attempts == list(range(1, FAST.max_deliver + 1))
    [dead] = await bus.dead_letters()
    assert (dead.message.subject, dead.group, dead.attempts) == (subject, "workers", FAST.max_deliver)
    assert dead.message.data == b"poison"
    assert "cannot handle this" in dead.error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("Dead-lettered" in r.getMessage() and subject in r.getMessage() for r in errors)

    # Replayed to its group: handled afresh once the cause is fixed, and no longer dead.
    cured = True
    assert await bus.replay(dead.id)
    await eventually(lambda: b"poison" in good)
    await eventually(lambda: bus.pending == 0)
    assert await bus.dead_letters() == []
    assert not await bus.replay(dead.id)


async def test_unprocessable_message_is_dead_lettered_at_once(bus: Bus) -> None:
    subject = unique("garbage")
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise Unprocessable("not JSON")

    await bus.subscribe(subject, "g", handler)
    await bus.publish([message(subject, "{{{")])
    await eventually(lambda: bus.pending == 0 and attempts)
    [dead] = await bus.dead_letters()
    assert (attempts, dead.attempts) == ([1], 1)


async def test_replay_of_an_unknown_dead_letter_is_refused(bus: Bus) -> None:
    assert not await bus.replay(str(uuid.uuid4()))


async def test_a_group_that_subscribes_late_still_gets_what_was_published(bus: Bus) -> None:
    subject = unique("durable")
    await bus.publish([message(subject, f"early-{n}") for n in range(3)])
    got: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.data)

    await bus.subscribe(subject, "late-group", handler)
    await bus.publish([message(subject, "after")])
    await eventually(lambda: len(got) == 4)
    assert got == [b"early-0", b"early-1", b"early-2", b"after"]


# Not for the in-memory bus, which lives and dies with its process: nothing outlives a connection.
@pytest.mark.parametrize("harness", DURABLE_BACKENDS, indirect=True)
async def test_a_group_resumes_where_it_left_off_after_its_connection_closes(harness: Harness) -> None:
    assert harness.durable_across_connections
    subject = unique("resume")
    first: list[bytes] = []
    second: list[bytes] = []

    async def collect_first(delivery: Delivery) -> None:
        first.append(delivery.message.data)

    async def collect_second(delivery: Delivery) -> None:
        second.append(delivery.message.data)

    consumer = await harness.connect()
    await consumer.subscribe(subject, "g", collect_first)
    publisher = await harness.connect()
    await publisher.publish([message(subject, "before")])
    await eventually(lambda: first == [b"before"])
    await eventually(lambda: consumer.pending == 0)
    await consumer.close()

    await publisher.publish([message(subject, "while-away")])
    again = await harness.connect()
    await again.subscribe(subject, "g", collect_second)
    await eventually(lambda: second == [b"while-away"])


async def test_pending_counts_messages_until_every_group_settles_them(bus: Bus) -> None:
    subject = unique("pending")
    release = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        await release.wait()

    async def fast(delivery: Delivery) -> None:
        return None

    await bus.subscribe(subject, "slow", slow)
    await bus.subscribe(subject, "fast", fast)
    await bus.publish([message(subject, "a"), message(subject, "b")])
    assert bus.pending == 2
    await eventually(lambda: bus.stats.acked >= 2, what="the fast group")
    assert bus.pending == 2, "the slow group has not acknowledged yet"
    release.set()
    await eventually(lambda: bus.pending == 0)


class Blocking:
    """A handler that holds its first message until released: one delivery stays in flight."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished: list[bytes] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.started.set()
        await self.release.wait()
        self.finished.append(delivery.message.data)

    async def in_flight(self, bus: Bus, subject: str) -> None:
        """Subscribe, publish two messages, and return once the first is being handled."""
        await bus.subscribe(subject, "g", self)
        await bus.publish([message(subject, "in-flight"), message(subject, "queued")])
        await asyncio.wait_for(self.started.wait(), 10)


async def test_close_lets_the_handler_in_flight_finish_and_takes_no_new_messages(bus: Bus) -> None:
    subject = unique("shutdown")
    handler = Blocking()
    await handler.in_flight(bus, subject)

    closing = asyncio.create_task(bus.close())
    await asyncio.sleep(0)  # let close() begin before the handler is released
    assert not closing.done(), "close() must wait for the handler in flight"
    handler.release.set()
    await asyncio.wait_for(closing, 10)

    assert handler.finished == [b"in-flight"]
    assert bus.stats.acked == 1
    with pytest.raises(BusClosedError):
        await bus.publish([message(subject, "too late")])


class Batching:
    """A handler that takes ready deliveries together, and whose first batch fails."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.batches: list[int] = []

    async def __call__(self, delivery: Delivery) -> Outcome:
        self.handled.append(delivery.message.data)
        return Outcome.APPLIED

    async def batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        self.batches.append(len(deliveries))
        if len(self.batches) == 1:
            raise RuntimeError("a race: undone, and handed over one by one")
        self.handled.extend(delivery.message.data for delivery in deliveries)
        return [Outcome.APPLIED] * len(deliveries)


async def test_a_handler_that_takes_batches_gets_what_is_ready_together_and_in_order(bus: Bus) -> None:
    subject = unique("batches")
    await bus.publish([message(subject, str(n)) for n in range(150)])
    handler = Batching()
    await bus.subscribe(subject, "g", handler)
    await eventually(lambda: len(handler.handled) == 150 and bus.pending == 0)
    assert handler.handled == [str(n).encode() for n in range(150)]
    assert max(handler.batches) > 1
    assert max(handler.batches) <= 64
    # The failed batch was handed over one by one: not a redelivery, and acked once each.
    assert (bus.stats.acked, bus.stats.redelivered, bus.stats.delivered) == (150, 0, 150)


async def test_stop_consuming_finishes_the_handler_in_flight_and_still_publishes(bus: Bus) -> None:
    subject, answers = unique("draining"), unique("answers")
    handler = Blocking()
    await handler.in_flight(bus, subject)

    stopping = asyncio.create_task(bus.stop_consuming())
    await asyncio.sleep(0)  # let stop_consuming() begin before the handler is released
    assert not stopping.done(), "stop_consuming() waits for the handler in flight"
    handler.release.set()
    await asyncio.wait_for(stopping, 10)
    assert handler.finished == [b"in-flight"], "the queued message is not taken any more"

    # What the last handlers committed can still go out: publishing works until close().
    published = bus.stats.published
    await bus.publish([message(answers, "published while draining")])
    assert bus.stats.published == published + 1
    await bus.close()
    assert handler.finished == [b"in-flight"]


class Versions:
    """A keyed handler for one record: applies version n only after n - 1, like the app's listeners.

    Payloads are ``"<record>:<version>"``; those in ``broken`` fail (raise) until cured.
    """

    def __init__(self, broken: set[str] | None = None) -> None:
        self.applied: dict[str, int] = {}
        self.order: list[str] = []  # "record:version" as applied
        self.seen: list[tuple[int, int]] = []  # (version, attempt), in delivery order
        self.broken = broken or set()

    def key(self, delivery: Delivery) -> str | None:
        return delivery.message.data.decode().partition(":")[0]

    async def __call__(self, delivery: Delivery) -> Outcome:
        record, _, raw = delivery.message.data.decode().partition(":")
        version = int(raw)
        self.seen.append((version, delivery.attempt))
        have = self.applied.get(record, 0)
        if version <= have:
            return Outcome.DUPLICATE
        if version > have + 1:
            raise Retry(f"{record} version {version} is early: have {have}")
        if f"{record}:{version}" in self.broken:
            raise RuntimeError(f"version {version} breaks the listener")
        self.applied[record] = version
        self.order.append(f"{record}:{version}")
        return Outcome.APPLIED


class BatchVersions(Versions):
    """The same, taking whatever is ready as one all-or-nothing batch, as the app's listeners do."""

    async def batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        applied = dict(self.applied)
        for delivery in deliveries:
            record, _, raw = delivery.message.data.decode().partition(":")
            if int(raw) != applied.get(record, 0) + 1:
                raise RuntimeError("not all of it is next: one at a time")
            applied[record] = int(raw)
        return [await self(delivery) for delivery in deliveries]


def versions(subject: str, record: str, *numbers: int) -> list[Message]:
    return [message(subject, f"{record}:{n}") for n in numbers]


async def test_an_early_delivery_is_never_counted_as_a_failure(bus: Bus) -> None:
    subject = unique("patient")
    handler = Versions()
    await bus.subscribe(subject, "g", handler)
    # Version 2 comes first and is refused again and again, far more often than max_deliver.
    await bus.publish(versions(subject, "r", 2))
    await eventually(lambda: len(handler.seen) > 3 * FAST.max_deliver, what="many early refusals")
    assert await bus.dead_letters() == []
    await bus.publish(versions(subject, "r", 1))
    await eventually(lambda: handler.applied == {"r": 2} and bus.pending == 0)
    assert await bus.dead_letters() == []
    assert bus.stats.dead_lettered == 0


@pytest.mark.policy(SLOW_RETRIES)
@pytest.mark.parametrize("kind", [Versions, BatchVersions])
async def test_an_early_delivery_comes_again_as_soon_as_its_record_moves_on(bus: Bus, kind: type[Versions]) -> None:
    subject = unique("parked")
    handler = kind()
    await bus.subscribe(subject, "g", handler)
    await bus.publish(versions(subject, "r", 3, 2))
    await eventually(lambda: sorted(v for v, _ in handler.seen) == [2, 3], what="both refused once")
    started = time.monotonic()
    await bus.publish(versions(subject, "r", 1))
    # Its backoff is seconds long: only the wake-up of version 1's application brings 2, then 3.
    await eventually(lambda: handler.applied == {"r": 3}, timeout=SLOW_RETRIES.backoff / 2, what="2 and 3 woken")
    assert time.monotonic() - started < SLOW_RETRIES.backoff
    await eventually(lambda: bus.pending == 0)


@pytest.mark.policy(SHORT_WAIT, ack_wait=1.0, memory=SHORT_WAIT_IN_MEMORY)
async def test_an_early_delivery_whose_predecessor_never_comes_is_dead_lettered_after_max_wait(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    subject = unique("orphan")
    handler = Versions()
    await bus.subscribe(subject, "g", handler)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        await bus.publish(versions(subject, "r", 2))
        [dead] = await eventually(bus.dead_letters, timeout=10, what="the dead letter")
    assert time.monotonic() - started >= bus.policy.max_wait
    assert "waited" in dead.error and "early" in dead.error
    assert (dead.message.subject, dead.group, dead.key) == (subject, "g", "r")
    await eventually(lambda: bus.pending == 0)
    assert any("Dead-lettered" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.policy(SHORT_WAIT, ack_wait=1.0, memory=SHORT_WAIT_IN_MEMORY)
async def test_replaying_a_dead_letter_lets_through_what_waited_behind_it_in_version_order(bus: Bus) -> None:
    subject = unique("unblock")
    handler = Versions(broken={"r:1"})
    await bus.subscribe(subject, "g", handler)
    other = Versions()
    await bus.subscribe(subject, "other-group", other)
    # Version 1 keeps failing and is dead-lettered; 2 and 3 wait behind it until they die of waiting.
    await bus.publish([*versions(subject, "r", 1, 2, 3), *versions(subject, "s", 1)])
    dead = await eventually(lambda: _dead_of(bus, "g", 3), timeout=15, what="three dead letters")
    assert dead is not None
    assert handler.applied == {"s": 1} and other.applied == {"r": 3, "s": 1}
    first = next(letter for letter in dead if letter.message.data.endswith(b":1"))

    handler.broken.clear()  # the bug is fixed; one replay is enough
    replayed = await bus.replay(first.id)
    assert sorted(replayed) == sorted(letter.id for letter in dead)
    assert replayed[0] == first.id
    await eventually(lambda: handler.applied == {"r": 3, "s": 1} and bus.pending == 0, what="r through to 3")
    assert await bus.dead_letters() == []
    assert handler.order == ["s:1", "r:1", "r:2", "r:3"]
    assert not await bus.replay(first.id), "a dead letter is replayed once"
    assert other.applied == {"r": 3, "s": 1}, "the other group heard nothing again"


async def _dead_of(bus: Bus, group: str, count: int) -> list[DeadLetter] | None:
    dead = [letter for letter in await bus.dead_letters() if letter.group == group]
    return dead if len(dead) >= count else None
