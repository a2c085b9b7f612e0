"""A group's members in this process: each pulls from its group's consumers and buffers what arrives.

A member keeps a pull request open on each of its sources (a batch, topped up once half of it
is handled) and hands what arrives, in order, to the bus's delivery loop. What it took but never
started is handed back to the server when it stops, for the group's other members.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from app.bus.handlers import BatchHandler, Handler
from app.bus.rules import Tries

log = logging.getLogger("ticketing.bus")

# A pull request the server never answered within its expiry (plus this) was lost: ask again.
_REQUEST_GRACE = 1.0
# After a 409 (the server refused a pull request) wait before asking again, rather than spin.
_REFUSED_PAUSE = 0.5


@dataclass(frozen=True)
class PullPolicy:
    batch: int
    expires: float
    reconnect_wait: float
    # At most this many ready deliveries go together to a handler that takes batches.
    max_batch: int
    # Deliveries past this are dead-lettered without running the handler.
    max_deliver: int

    @property
    def low_water(self) -> int:
        return self.batch // 2


@dataclass(eq=False, slots=True)
class Source:
    """One pull consumer a member takes messages from: its group's events, or its group's replays."""

    consumer: str
    next_subject: str
    inbox: str
    sub: Subscription | None = None
    tokens: int = 0
    request: int = 0  # token of the pull request in force; 0 when there is none
    remaining: int = 0
    expires_at: float = 0.0
    not_before: float = 0.0
    buffered: int = 0
    refused: str = ""

    @classmethod
    def of(cls, nc: Client, stream: str, consumer: str) -> Source:
        return cls(consumer, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", nc.new_inbox())


@dataclass(eq=False, slots=True)
class Received:
    source: Source
    msg: Msg
    # Loop time the server last heard about this message: its delivery, or an in-progress.
    seen: float
    tries: Tries
    # Runs here since the server delivered it: an early delivery comes again without a redelivery.
    reruns: int = 0


@dataclass(eq=False)
class Group:
    subject: str
    name: str
    durable: str
    replay_durable: str
    members: list[Member] = field(default_factory=list)


@dataclass(eq=False)
class Member:
    group: Group
    handler: Handler
    sources: list[Source]
    policy: PullPolicy
    buffer: deque[Received] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Being handled: the server must keep hearing that they are still ours.
    in_hand: list[Received] = field(default_factory=list)
    # Came early: kept (not nak'ed) until their record moves on, or their backoff runs out.
    parked: set[Received] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    batching: bool = field(init=False)

    def __post_init__(self) -> None:
        self.batching = isinstance(self.handler, BatchHandler)

    async def listen(self, nc: Client) -> None:
        for source in self.sources:
            source.sub = await nc.subscribe(f"{source.inbox}.*", cb=self._receiver(source))

    def held(self) -> list[Received]:
        """Every message the server counts as this member's."""
        return [*self.in_hand, *self.buffer, *self.parked]

    def park(self, received: Received) -> None:
        self.parked.add(received)

    def unpark(self, received: Received) -> None:
        """Its turn again: back in the buffer (unless it was handed back meanwhile)."""
        if received in self.parked:
            self.parked.discard(received)
            received.reruns += 1
            received.source.buffered += 1
            self.buffer.append(received)
            self.wake.set()

    def _receiver(self, source: Source) -> Callable[[Msg], Awaitable[None]]:
        loop = asyncio.get_running_loop()

        async def receive(msg: Msg) -> None:
            if msg.reply:
                # A message (its reply subject is where acks go); it counts against the request.
                if source.request:
                    source.remaining -= 1
                    if source.remaining <= 0:
                        source.request = 0
                source.buffered += 1
                tries = Tries(failures=msg.metadata.num_delivered - 1)
                self.buffer.append(Received(source, msg, loop.time(), tries))
                self.wake.set()
                return
            # A status: 408 the request expired, 409 the server refused or ended it, 100 a heartbeat.
            status = (msg.headers or {}).get("Status", "")
            if status == "100" or not msg.subject.endswith(f".{source.request}"):
                return  # a heartbeat, or news of a request already given up on
            source.request = 0
            if status == "409":
                # Refused or cut short (server shutdown, consumer deleted...): said once, not each retry.
                reason = str((msg.headers or {}).get("Description", ""))
                if reason != source.refused:
                    log.info("[bus] NATS ended a pull on %s: %s", source.consumer, reason)
                source.refused = reason
                source.not_before = loop.time() + _REFUSED_PAUSE
            else:
                source.refused = ""
            self.wake.set()

        return receive

    async def top_up(self, nc: Client | None, now: float, *, closing: bool) -> float:
        """Keep a pull request open while the buffer runs low; return when to look again."""
        wake_at = now + self.policy.expires
        for source in self.sources:
            if source.request and now >= source.expires_at:
                source.request = 0  # never answered: the server restarted, or the request was lost
            if not source.request and source.buffered <= self.policy.low_water and not closing:
                if now < source.not_before:
                    wake_at = min(wake_at, source.not_before)
                    continue
                await self._pull(nc, source, now)
            if source.request:
                wake_at = min(wake_at, source.expires_at)
            elif source.not_before > now:
                wake_at = min(wake_at, source.not_before)
        return wake_at

    async def _pull(self, nc: Client | None, source: Source, now: float) -> None:
        if nc is None or not nc.is_connected:
            # The reconnect callback wakes the members; until then look again now and then.
            source.not_before = now + self.policy.reconnect_wait
            return
        source.tokens += 1
        batch = self.policy.batch - source.buffered
        request = {"batch": batch, "expires": int(self.policy.expires * 1e9)}
        source.request, source.remaining = source.tokens, batch
        source.expires_at = now + self.policy.expires + _REQUEST_GRACE
        try:
            await nc.publish(source.next_subject, json.dumps(request).encode(), reply=f"{source.inbox}.{source.tokens}")
        except Exception as exc:
            source.request = 0
            source.not_before = now + self.policy.reconnect_wait
            log.warning("[bus] Could not ask NATS for messages of %s: %s", source.consumer, exc)

    def forget_requests(self) -> None:
        """A restarted server forgot our pull requests: ask again now rather than at their expiry."""
        for source in self.sources:
            source.request = 0
            source.not_before = 0.0
        self.wake.set()

    def take_ready(self) -> list[Received]:
        """The next message, and for a handler that takes batches whatever else is ready behind it."""
        ready: list[Received] = []
        while self.buffer and len(ready) < (self.policy.max_batch if self.batching else 1):
            received = self.buffer[0]
            # One past its deliveries is dead-lettered alone, never in the batch of the living.
            if ready and received.msg.metadata.num_delivered > self.policy.max_deliver:
                break
            self.buffer.popleft()
            received.source.buffered -= 1
            ready.append(received)
            if received.msg.metadata.num_delivered > self.policy.max_deliver:
                break
        return ready

    async def drain(self) -> None:
        """Stop taking messages; what the server already sent still reaches the buffer."""
        await asyncio.gather(*(_drain(source) for source in self.sources if source.sub is not None))

    async def hand_back(self) -> None:
        # Taken from the server but not settled here: the other members can have them at once.
        waiting = [*self.parked]
        self.parked.clear()
        while self.buffer:
            received = self.buffer.popleft()
            received.source.buffered -= 1
            waiting.append(received)
        for received in waiting:
            try:
                await received.msg.nak()
            except Exception as exc:
                log.debug("[bus] Could not hand a message back (it returns after ack_wait): %s", exc)


async def _drain(source: Source) -> None:
    assert source.sub is not None
    try:
        await source.sub.drain()  # type: ignore[no-untyped-call]
    except Exception as exc:
        log.debug("[bus] Draining the pull of %s: %s", source.consumer, exc)
