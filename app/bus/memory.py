"""The in-process bus: the default backend, and with ``chaos`` a way to see the concurrency problem.

Every subject keeps its last ``retain`` messages (10,000 by default), so a group that subscribes
late still gets them. Each group has one queue; each member of the group is one worker taking
from it, which gives "exactly one member handles each message". Failed deliveries come back
through a timer, so a message waiting for its turn never blocks the ones behind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from blinker import Namespace

from app.bus import signals
from app.bus.base import (
    BatchHandler,
    Bus,
    BusClosedError,
    DeadLetter,
    Delivery,
    DeliveryPolicy,
    Handler,
    Message,
    Verdict,
    utcnow,
)

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


@dataclass
class _Group:
    subject: str
    name: str
    queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
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
        self._dead: dict[str, DeadLetter] = {}
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
        worker = asyncio.create_task(self._work(state, handler), name=f"bus:{subject}/{group}")
        state.workers.append(worker)

    async def dead_letters(self) -> list[DeadLetter]:
        return sorted(self._dead.values(), key=lambda dead: dead.failed_at)

    async def replay(self, dead_letter_id: str) -> bool:
        dead = self._dead.get(dead_letter_id)
        state = self._groups.get((dead.message.subject, dead.group)) if dead else None
        if dead is None or state is None:
            return False
        del self._dead[dead_letter_id]
        self._schedule(state, Delivery(dead.message, dead.group, 1), 0.0, new=True)
        return True

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
            self._schedule(state, Delivery(message, state.name, 1), delay, new=True)

    def _schedule(self, state: _Group, delivery: Delivery, delay: float, *, new: bool) -> None:
        if new:
            key = delivery.message.id
            self._outstanding[key] = self._outstanding.get(key, 0) + 1
        if delay <= 0:
            state.queue.put_nowait(delivery)
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            state.queue.put_nowait(delivery)

        timer = loop.call_later(delay, fire)
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
        batching = isinstance(handler, BatchHandler)
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
            try:
                verdicts = await self.run_batch(handler, ready)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not the handler (its failures are verdicts) but the machinery around it, an
                # observer say: keep the worker alive, and the messages, which come again.
                log.exception("[bus] Delivering %d message(s) to %s / %s failed", len(ready), state.subject, state.name)
                verdicts = [self.failed_around_handler(d, "the bus failed around the handler") for d in ready]
            for delivery, verdict in zip(ready, verdicts, strict=True):
                self._conclude(state, delivery, verdict)

    def _conclude(self, state: _Group, delivery: Delivery, verdict: Verdict) -> None:
        if verdict.retry_in is not None:
            if not self._closing:
                retry = Delivery(delivery.message, delivery.group, delivery.attempt + 1)
                self._schedule(state, retry, verdict.retry_in, new=False)
            return
        if verdict.dead:
            dead_id = str(uuid.uuid4())
            self._dead[dead_id] = DeadLetter(
                id=dead_id,
                group=delivery.group,
                attempts=delivery.attempt,
                error=verdict.error,
                failed_at=utcnow(),
                message=delivery.message,
            )
        self._settle(delivery.message)
