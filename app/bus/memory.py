"""The in-process bus: the default backend, and with ``chaos`` a way to see the concurrency problem.

Every subject keeps its last ``retain`` messages (10,000 by default), so a group that subscribes
late still gets them. Each group has one queue; each member of the group is one worker taking
from it, which gives "exactly one member handles each message". A delivery that came early waits
parked, and a failed one waits for its backoff, so neither blocks the ones behind it. Messages
live in this process only, but dead letters do not: they are kept where ``dead_letters`` says
(the database, in the app).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from blinker import Namespace

from app.bus import signals
from app.bus.base import Bus, BusClosedError
from app.bus.deadletters import DeadLetters, InProcessDeadLetters
from app.bus.handlers import Handler, takes_batches
from app.bus.messages import DeadLetter, Delivery, Message, Verdict
from app.bus.rules import DeliveryPolicy, Tries

log = logging.getLogger("ticketing.bus")


@dataclass(frozen=True)
class Chaos:
    """Delivers each message after a random delay, so out of order, and some of them twice."""

    seed: int
    max_delay: float = 0.02
    duplicates: float = 0.25
    rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_delay < 0 or not 0 <= self.duplicates <= 1:
            raise ValueError("chaos needs max_delay >= 0 and 0 <= duplicates <= 1")
        object.__setattr__(self, "rng", random.Random(self.seed))

    def delays(self) -> list[float]:
        """The delays of the copies of one message: one, or two when it is duplicated."""
        copies = 2 if self.rng.random() < self.duplicates else 1
        return [self.rng.uniform(0, self.max_delay) for _ in range(copies)]


@dataclass(slots=True)
class _Due:
    """A delivery waiting for a worker of its group."""

    delivery: Delivery
    tries: Tries = field(default_factory=Tries)
    # Set for a replayed dead letter: it is forgotten once this delivery settles.
    dead_id: str | None = None


@dataclass
class _Group:
    subject: str
    name: str
    queue: asyncio.Queue[_Due] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    idle: set[asyncio.Task[None]] = field(default_factory=set)


class MemoryBus(Bus):
    kind = "in-memory bus"
    # Messages live in this process only: the outbox keeps an event until it has settled here.
    durable = False

    def __init__(
        self,
        policy: DeliveryPolicy | None = None,
        chaos: Chaos | None = None,
        max_batch: int = 64,
        retain: int = 10_000,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        super().__init__(policy)
        if retain < 0:
            raise ValueError("retain must be >= 0")
        self.max_batch = max_batch
        self.chaos = chaos
        # The last ``retain`` messages of each subject, for groups that subscribe late; older
        # ones are forgotten, so that a long-running process does not grow without bound.
        self._streams: dict[str, deque[Message]] = {}
        self._forgotten: dict[str, int] = {}
        self.retain = retain
        self._groups: dict[tuple[str, str], _Group] = {}
        # blinker does the fan-out from a subject to the groups listening to it.
        self._fanout = Namespace()
        self._outstanding: dict[str, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._dead = dead_letters or InProcessDeadLetters()
        self._closing = False
        self._consuming_stopped = False

    async def connect(self) -> None:
        self._closing = self._consuming_stopped = False

    async def stop_consuming(self) -> None:
        self._consuming_stopped = True
        workers = [worker for group in self._groups.values() for worker in group.workers]
        for group in self._groups.values():
            # Idle workers are waiting on the queue: nothing to finish, stop them now.
            for worker in group.idle:
                worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_consuming()
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.rules.parking.clear()
        # The groups go, and with them what they still owed: their receivers must go too, or a
        # bus connected again would queue new messages for them where no worker takes any.
        self._groups.clear()
        self._fanout = Namespace()
        self._outstanding.clear()

    async def publish(self, messages: Sequence[Message]) -> None:
        if self._closing:
            raise BusClosedError("the in-memory bus is shutting down")
        for message in messages:
            stream = self._streams.setdefault(message.subject, deque(maxlen=self.retain))
            if len(stream) == self.retain:
                self._forgotten[message.subject] = self._forgotten.get(message.subject, 0) + 1
            stream.append(message)
            self.stats.published += 1
            signals.published.send(self, message=message)
            self._fanout.signal(message.subject).send(self, message=message)
            if message.id not in self._outstanding:
                # No group here wants it: nothing left to do with it.
                signals.settled.send(self, message_id=message.id)

    async def subscribe(self, subject: str, group: str, handler: Handler) -> None:
        if self._closing:
            raise BusClosedError("the in-memory bus is shutting down")
        key = (subject, group)
        state = self._groups.get(key)
        if state is None:
            state = self._groups[key] = _Group(subject, group)

            def offer(_sender: object, message: Message) -> None:
                self._offer(state, message)

            # Strong reference: the receiver lives as long as the group does.
            self._fanout.signal(subject).connect(offer, sender=self, weak=False)
            # A durable group: whatever was published before it existed is its backlog, as far
            # as it is still retained; say so when it is not, or the group's gap goes unnoticed.
            if forgotten := self._forgotten.get(subject, 0):
                log.warning(
                    "[bus] Group %s subscribed late to %s: its %d oldest message(s) were already "
                    "forgotten (retain=%d) and will not be delivered to it",
                    group,
                    subject,
                    forgotten,
                    self.retain,
                )
            for message in self._streams.get(subject, []):
                self._offer(state, message)
            # Replays that an earlier run had begun and not seen through start again.
            for dead in await self._dead.in_replay(subject, group):
                self._replay(state, dead)
        worker = asyncio.create_task(self._work(state, handler), name=f"bus:{subject}/{group}")
        state.workers.append(worker)

    async def dead_letters(self) -> list[DeadLetter]:
        return await self._dead.listing()

    async def replay(self, dead_letter_id: str) -> list[str]:
        dead = await self._dead.take(dead_letter_id)
        if dead is None:
            return []
        replayed = [dead]
        if dead.key is not None:
            # What waited behind it, dead of waiting: the version rule lets each through in turn.
            for sibling in await self._dead.about(dead.group, dead.key):
                if (taken := await self._dead.take(sibling.id)) is not None:
                    replayed.append(taken)
        for letter in replayed:
            state = self._groups.get((letter.message.subject, letter.group))
            if state is None:
                continue  # no group here any more; it starts again when one subscribes
            self._replay(state, letter)
        return [letter.id for letter in replayed]

    async def ping(self) -> bool:
        return not self._closing

    def describe(self) -> str:
        return f"{self.kind} (chaos seed {self.chaos.seed})" if self.chaos else self.kind

    @property
    def pending(self) -> int:
        return len(self._outstanding)

    def _offer(self, state: _Group, message: Message) -> None:
        delays = self.chaos.delays() if self.chaos else [0.0]
        for delay in delays:
            self._count(message)
            self._later(delay, state, _Due(Delivery(message, state.name, 1)))

    def _replay(self, state: _Group, dead: DeadLetter) -> None:
        self._count(dead.message)
        state.queue.put_nowait(_Due(Delivery(dead.message, state.name, 1), dead_id=dead.id))

    def _count(self, message: Message) -> None:
        self._outstanding[message.id] = self._outstanding.get(message.id, 0) + 1

    def _later(self, delay: float, state: _Group, due: _Due) -> None:
        if delay <= 0:
            state.queue.put_nowait(due)
            return
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            state.queue.put_nowait(due)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def _settle(self, message: Message) -> None:
        left = self._outstanding[message.id] - 1
        if left:
            self._outstanding[message.id] = left
        else:
            del self._outstanding[message.id]
            signals.settled.send(self, message_id=message.id)

    async def _work(self, state: _Group, handler: Handler) -> None:
        me = asyncio.current_task()
        assert me is not None
        batching = takes_batches(handler)
        while not self._consuming_stopped:
            state.idle.add(me)
            try:
                ready = [await state.queue.get()]
            finally:
                state.idle.discard(me)
            # Whatever else is already waiting goes along, for a handler that takes batches: under
            # load, batches form by themselves. Others take one at a time, leaving the rest to
            # the other members of the group.
            while batching and len(ready) < self.max_batch and not state.queue.empty():
                ready.append(state.queue.get_nowait())
            deliveries = [due.delivery for due in ready]
            try:
                verdicts = await self.rules.run_batch(handler, deliveries, [due.tries for due in ready])
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not the handler (its failures are verdicts) but the machinery around it, an
                # observer say: keep the worker alive, and the messages, which come again.
                log.exception("[bus] Delivering %d message(s) to %s / %s failed", len(ready), state.subject, state.name)
                verdicts = [
                    self.rules.failed_around_handler(
                        handler, due.delivery, due.tries, "the bus failed around the handler"
                    )
                    for due in ready
                ]
            for due, verdict in zip(ready, verdicts, strict=True):
                await self._conclude(state, due, verdict)

    async def _conclude(self, state: _Group, due: _Due, verdict: Verdict) -> None:
        delivery = due.delivery
        if verdict.retry_in is not None:
            if not self._closing:
                again = _Due(Delivery(delivery.message, delivery.group, delivery.attempt + 1), due.tries, due.dead_id)
                self.rules.wait(state.name, verdict, due.tries, lambda: state.queue.put_nowait(again))
            return
        if verdict.dead:
            try:
                # Kept before it counts as settled, so before the outbox marks its event sent.
                await self._dead.keep(self.rules.dead_letter(delivery, verdict))
            except Exception as exc:
                log.warning("[bus] Could not keep the dead letter of event %s: %s", delivery.message.id, exc)
                again = _Due(Delivery(delivery.message, delivery.group, delivery.attempt + 1), due.tries, due.dead_id)
                self.rules.parking.park(
                    state.name, None, self.policy.backoff_max, lambda: state.queue.put_nowait(again)
                )
                return
        elif due.dead_id is not None:
            await self._dead.replayed(due.dead_id)
        self._settle(delivery.message)
