"""The NATS JetStream bus: the in-memory bus's semantics, shared by every process that connects.

On the server, for stream ``TICKETING`` (the ``stream`` option; subjects go under its lower-cased name):

- stream ``TICKETING`` keeps events on ``ticketing.events.<subject>`` and replays on
  ``ticketing.replay.<consumer>``, by limits, so that a group that subscribes late gets everything;
- stream ``TICKETING_DEAD`` keeps one message per dead letter, on ``ticketing.dead.<id>``;
- each (subject, group) has a durable pull consumer on the events and one on its replays,
  shared by the group's members in every process: one member handles each message.

A member keeps a pull request open (a batch, topped up once half of it is handled) and handles
what arrives in order, one message at a time. Retries are ours: JetStream's BackOff only spaces
ack timeouts, so a failed delivery is nak'ed with the policy's delay, and the consumer's own
max_deliver stays unbounded so that the server never drops a message: past ``max_deliver`` we
dead-letter it. The attempt number is the server's delivery count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

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
    Unprocessable,
    Verdict,
    utcnow,
)

log = logging.getLogger("ticketing.bus")

MSG_ID = "Nats-Msg-Id"
EVENT_ID = "Ticketing-Event-Id"
OCCURRED_AT = "Ticketing-Occurred-At"
SOURCE = "Ticketing-Source"

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# A NATS subject: dot-separated tokens, none of them empty, a wildcard or containing blanks.
_SUBJECT = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_DEAD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
# JetStream counts unacked messages per consumer, retries waiting for their delay included.
_MAX_ACK_PENDING = 20_000
# A pull request the server never answered within its expiry (plus this) was lost: ask again.
_REQUEST_GRACE = 1.0
# After a 409 (the server refused a pull request) wait before asking again, rather than spin.
_REFUSED_PAUSE = 0.5
# Settled elsewhere? Messages this process published and still expects are checked this late.
_RECONCILE_AFTER = 1.0

_dead_encoder = msgspec.json.Encoder()
_dead_decoder = msgspec.json.Decoder(DeadLetter)


def durable_name(subject: str, group: str) -> str:
    """The consumer shared by ``group`` on ``subject``: readable, and unique thanks to the digest."""
    digest = hashlib.blake2s(f"{subject}\0{group}".encode(), digest_size=5).hexdigest()
    return f"{_UNSAFE.sub('_', group)[:48]}__{_UNSAFE.sub('_', subject)[:48]}_{digest}"


def check_subject(subject: str) -> str:
    if not _SUBJECT.fullmatch(subject):
        raise ValueError(f"subject {subject!r} cannot be a NATS subject (no blanks, '*', '>' or empty tokens)")
    return subject


@dataclass(eq=False, slots=True)
class _Source:
    """One pull consumer a member takes messages from: its group's events, or its group's replays."""

    consumer: str
    next_subject: str
    inbox: str
    sub: Subscription | None = None
    request: int = 0  # token of the pull request in force; 0 when there is none
    remaining: int = 0
    expires_at: float = 0.0
    not_before: float = 0.0
    buffered: int = 0
    refused: str = ""


@dataclass(eq=False, slots=True)
class _Received:
    source: _Source
    msg: Msg
    # Loop time the server last heard about this message: its delivery, or an in-progress.
    seen: float


@dataclass(eq=False)
class _Group:
    subject: str
    name: str
    durable: str
    replay_durable: str
    members: list[_Member] = field(default_factory=list)


@dataclass(eq=False)
class _Member:
    group: _Group
    handler: Handler
    sources: list[_Source]
    buffer: deque[_Received] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Being handled: the server must keep hearing that they are still ours.
    in_hand: list[_Received] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    batching: bool = field(init=False)

    def __post_init__(self) -> None:
        self.batching = isinstance(self.handler, BatchHandler)


@dataclass(eq=False, slots=True)
class _Expected:
    """A message published here that a local group has still to settle."""

    consumer: str
    since: float
    count: int = 1
    seq: int = 0


async def _exhausted(delivery: Delivery) -> None:
    raise Unprocessable(
        f"delivered {delivery.attempt} times without an answer (its handler kept crashing or its process died)"
    )


class NatsBus(Bus):
    kind = "NATS"

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        policy: DeliveryPolicy | None = None,
        stream: str = "TICKETING",
        ack_wait: float = 30.0,
        batch: int = 128,
        pull_expires: float = 5.0,
        publish_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        reconnect_wait: float = 0.5,
        max_batch: int = 64,
    ) -> None:
        super().__init__(policy)
        parts = urlsplit(url)
        if parts.scheme.lower() != "nats" or not parts.hostname:
            raise ValueError(f"{url!r} is not a nats://host:port URL")
        if parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a NATS URL has no path")
        if not _STREAM_NAME.fullmatch(stream):
            raise ValueError(f"stream {stream!r}: use 1-32 letters, digits, '_' or '-'")
        durations = {
            "ack_wait": ack_wait,
            "pull_expires": pull_expires,
            "publish_timeout": publish_timeout,
            "connect_timeout": connect_timeout,
        }
        for name, seconds in durations.items():
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be > 0 seconds")
        for name, count in {"batch": batch, "max_batch": max_batch}.items():
            if count < 1:
                raise ValueError(f"{name} must be at least 1")
        self._url = f"nats://{parts.netloc}"
        # What logs and /health show: no credentials.
        self.server = f"nats://{parts.netloc.rpartition('@')[2]}"
        self.stream = stream
        self.dead_stream = f"{stream}_DEAD"
        self.ack_wait = ack_wait
        self.batch = batch
        # At most this many ready deliveries go together to a handler that takes batches.
        self.max_batch = max_batch
        self._prefix = stream.lower()
        self._pull_expires = pull_expires
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._low_water = batch // 2
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._groups: dict[tuple[str, str], _Group] = {}
        self._by_subject: dict[str, list[_Group]] = {}
        self._expected: dict[tuple[str, str], _Expected] = {}
        self._outstanding: dict[str, int] = {}
        self._tokens = 0
        self._last_error = ""
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()

    # -- the Bus interface -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None:
            return
        self._closing = False
        self._closed = asyncio.Event()
        self._last_error = ""
        nc = Client()
        options: dict[str, Any] = {
            "servers": [self._url],
            "name": f"ticketing {self.stream}",
            # Never give up: a restarted server is found again, and the fetch loops carry on.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": self._reconnect_wait,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        try:
            await asyncio.wait_for(nc.connect(**options), self._connect_timeout)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            reason = self._last_error or exc
            raise ConnectionError(
                f"cannot reach NATS at {self.server} within {self._connect_timeout}s: {reason}"
            ) from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=self._publish_timeout)
        try:
            await self._ensure_stream(self.stream, [f"{self._prefix}.events.>", f"{self._prefix}.replay.>"])
            await self._ensure_stream(self.dead_stream, [f"{self._prefix}.dead.>"])
        except BaseException as exc:
            self._nc = self._js = None
            await nc.close()
            if isinstance(exc, ServiceUnavailableError):
                raise ConnectionError(
                    f"NATS at {self.server} does not answer JetStream requests: is JetStream on (nats-server -js)?"
                ) from exc
            raise
        self._keeper = asyncio.create_task(self._keep(), name=f"bus:nats-keeper/{self.stream}")

    async def close(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        members = [member for group in self._groups.values() for member in group.members]
        nc = self._nc
        sources = [source for member in members for source in member.sources if source.sub is not None]
        # Stop taking messages first; draining hands what the server already sent to the buffers.
        if nc is not None and nc.is_connected:
            await asyncio.gather(*(self._drain(source) for source in sources))
        for member in members:
            member.wake.set()
        # Each member finishes (and acks) the message in hand, then hands its buffer back.
        await asyncio.gather(*(member.task for member in members if member.task), return_exceptions=True)
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if nc is not None:
            try:
                await nc.drain() if nc.is_connected else await nc.close()
            except Exception as exc:
                log.debug("[bus] Closing the NATS connection: %s", exc)
                with contextlib.suppress(Exception):
                    await nc.close()
        self._groups.clear()
        self._by_subject.clear()
        self._nc = self._js = None
        self._closed.set()

    async def publish(self, messages: Sequence[Message]) -> None:
        js = self._require()
        for message in messages:
            check_subject(message.subject)
        loop = asyncio.get_running_loop()
        # Expected before sending: a local group may handle a message before its PubAck arrives.
        expected: list[tuple[int, tuple[str, str]]] = []
        for index, message in enumerate(messages):
            for group in self._by_subject.get(message.subject, ()):
                key = (message.id, group.name)
                self._expect(key, group.durable, loop.time())
                expected.append((index, key))
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            # Pipelined: sent in order on one connection, so stored in order; then all acks awaited.
            for message in messages:
                future = await js.publish_async(
                    f"{self._prefix}.events.{message.subject}", message.data, headers=self._headers(message)
                )
                futures.append(future)
            acks = await asyncio.wait_for(asyncio.gather(*futures), self._publish_timeout)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            for _, key in expected:
                self._unexpect(key)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"NATS did not confirm {len(messages)} message(s) within {self._publish_timeout}s"
                ) from None
            raise
        for index, key in expected:
            if acks[index].duplicate:
                # Already in the stream (a retried publish): no new delivery will settle this one.
                self._unexpect(key)
            elif entry := self._expected.get(key):
                entry.seq = acks[index].seq
        for message in messages:
            self.stats.published += 1
            signals.published.send(self, message=message)

    async def subscribe(self, subject: str, group: str, handler: Handler) -> None:
        self._require()
        nc = self._nc
        assert nc is not None
        check_subject(subject)
        state = self._groups.get((subject, group))
        if state is None:
            durable = durable_name(subject, group)
            state = _Group(subject, group, durable, f"{durable}-replay")
            await self._ensure_consumer(durable, f"{self._prefix}.events.{subject}")
            await self._ensure_consumer(state.replay_durable, f"{self._prefix}.replay.{durable}")
            # Another subscribe of this group may have finished first while we awaited.
            state = self._groups.setdefault((subject, group), state)
            if state not in self._by_subject.setdefault(subject, []):
                self._by_subject[subject].append(state)
        member = _Member(state, handler, [self._source(state.durable), self._source(state.replay_durable)])
        for source in member.sources:
            source.sub = await nc.subscribe(f"{source.inbox}.*", cb=self._receiver(member, source))
        member.task = asyncio.create_task(self._work(member), name=f"bus:{subject}/{group}")
        state.members.append(member)

    async def dead_letters(self) -> list[DeadLetter]:
        js = self._require()
        found: list[DeadLetter] = []
        seq = 1
        while True:
            try:
                raw = await js.get_msg(self.dead_stream, seq=seq, subject=f"{self._prefix}.dead.>", next=True)
            except NotFoundError:
                return found
            seq = (raw.seq or seq) + 1
            try:
                found.append(_dead_decoder.decode(raw.data or b""))
            except msgspec.DecodeError as exc:
                log.warning("[bus] Skipping what is not a dead letter at %s #%d: %s", self.dead_stream, seq - 1, exc)

    async def replay(self, dead_letter_id: str) -> bool:
        js = self._require()
        if not _DEAD_ID.fullmatch(dead_letter_id):
            return False
        try:
            raw = await js.get_msg(self.dead_stream, subject=f"{self._prefix}.dead.{dead_letter_id}")
        except NotFoundError:
            return False
        dead = _dead_decoder.decode(raw.data or b"")
        durable = durable_name(dead.message.subject, dead.group)
        local = self._groups.get((dead.message.subject, dead.group))
        key = (dead.message.id, dead.group)
        if local is not None:
            self._expect(key, local.replay_durable, asyncio.get_running_loop().time())
        # Its own msg id, so the de-duplication window does not swallow it as the original event;
        # the same one for the same dead letter, so a retried replay is delivered once.
        headers = self._headers(dead.message) | {MSG_ID: f"replay-{dead.id}", EVENT_ID: dead.message.id}
        try:
            ack = await js.publish(f"{self._prefix}.replay.{durable}", dead.message.data, headers=headers)
        except BaseException:
            if local is not None:
                self._unexpect(key)
            raise
        if local is not None and (entry := self._expected.get(key)):
            entry.seq = ack.seq
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(self.dead_stream, raw.seq or 0)
        log.info("[bus] Replaying dead letter %s to %s / %s", dead.id, dead.message.subject, dead.group)
        return True

    async def ping(self) -> bool:
        nc = self._nc
        if nc is None or self._closing or not nc.is_connected:
            return False
        try:
            await nc.flush(timeout=2)
        except Exception:
            return False
        return True

    def describe(self) -> str:
        return f"{self.kind} {self.server} (JetStream, stream {self.stream})"

    @property
    def pending(self) -> int:
        return len(self._outstanding)

    # -- streams and consumers ---------------------------------------------------------------

    def _require(self) -> JetStreamContext:
        if self._closing:
            raise BusClosedError("the NATS bus is shutting down")
        if self._js is None:
            raise RuntimeError("the NATS bus is not connected: call connect() first")
        return self._js

    async def _ensure_stream(self, name: str, subjects: list[str]) -> None:
        js = self._js
        assert js is not None
        config = api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
        )
        try:
            # Idempotent: several processes start at once, and a restart finds the stream there.
            await js.add_stream(config)
        except APIError as exc:
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                raise exc from None
            missing = set(subjects) - set(info.config.subjects or [])
            if missing:
                raise RuntimeError(
                    f"stream {name} exists but does not hold {', '.join(sorted(missing))}: {exc}"
                ) from exc
            log.warning("[bus] Stream %s exists with another configuration; using it as it is (%s)", name, exc)

    async def _ensure_consumer(self, name: str, filter_subject: str) -> None:
        js = self._js
        assert js is not None
        config = api.ConsumerConfig(
            name=name,
            durable_name=name,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            # Unbounded: the bus dead-letters past policy.max_deliver; the server must never drop.
            max_deliver=-1,
            # One filter per consumer: nats-server 2.9 knows no filter_subjects.
            filter_subject=filter_subject,
            max_ack_pending=_MAX_ACK_PENDING,
        )
        try:
            await js.add_consumer(self.stream, config)
        except APIError as exc:
            try:
                info = await js.consumer_info(self.stream, name)
            except NotFoundError:
                raise exc from None
            if info.config.filter_subject != filter_subject:
                raise RuntimeError(f"consumer {name} exists on another subject: {exc}") from exc
            log.warning("[bus] Consumer %s exists with another configuration; using it as it is (%s)", name, exc)

    def _source(self, consumer: str) -> _Source:
        assert self._nc is not None
        return _Source(
            consumer=consumer,
            next_subject=f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
            inbox=self._nc.new_inbox(),
        )

    # -- pulling -----------------------------------------------------------------------------

    def _receiver(self, member: _Member, source: _Source) -> Callable[[Msg], Awaitable[None]]:
        loop = asyncio.get_running_loop()

        async def receive(msg: Msg) -> None:
            if msg.reply:
                # A message (its reply subject is where acks go); it counts against the request.
                if source.request:
                    source.remaining -= 1
                    if source.remaining <= 0:
                        source.request = 0
                source.buffered += 1
                member.buffer.append(_Received(source, msg, loop.time()))
                member.wake.set()
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
            member.wake.set()

        return receive

    async def _top_up(self, member: _Member, now: float) -> float:
        """Keep a pull request open while the buffer runs low; return when to look again."""
        wake_at = now + self._pull_expires
        for source in member.sources:
            if source.request and now >= source.expires_at:
                source.request = 0  # never answered: the server restarted, or the request was lost
            if not source.request and source.buffered <= self._low_water and not self._closing:
                if now < source.not_before:
                    wake_at = min(wake_at, source.not_before)
                    continue
                await self._pull(source, now)
            if source.request:
                wake_at = min(wake_at, source.expires_at)
            elif source.not_before > now:
                wake_at = min(wake_at, source.not_before)
        return wake_at

    async def _pull(self, source: _Source, now: float) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            # The reconnect callback wakes the members; until then look again now and then.
            source.not_before = now + self._reconnect_wait
            return
        self._tokens += 1
        batch = self.batch - source.buffered
        request = {"batch": batch, "expires": int(self._pull_expires * 1e9)}
        source.request, source.remaining = self._tokens, batch
        source.expires_at = now + self._pull_expires + _REQUEST_GRACE
        try:
            await nc.publish(source.next_subject, json.dumps(request).encode(), reply=f"{source.inbox}.{self._tokens}")
        except Exception as exc:
            source.request = 0
            source.not_before = now + self._reconnect_wait
            log.warning("[bus] Could not ask NATS for messages of %s: %s", source.consumer, exc)

    async def _drain(self, source: _Source) -> None:
        if source.sub is None:
            return
        try:
            await source.sub.drain()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.debug("[bus] Draining the pull of %s: %s", source.consumer, exc)

    async def _work(self, member: _Member) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                wake_at = await self._top_up(member, loop.time())
                if not member.buffer:
                    member.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(wake_at):
                            await member.wake.wait()
                    continue
                await self._deliver(member, self._take_ready(member))
            except asyncio.CancelledError:
                raise
            except Exception:
                # A member never dies of one bad message or one lost connection: log, pause, go on.
                log.exception("[bus] Member of %s / %s hit an error", member.group.subject, member.group.name)
                member.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._reconnect_wait):
                        await member.wake.wait()
        await self._hand_back(member)

    def _take_ready(self, member: _Member) -> list[_Received]:
        """The next message, and for a handler that takes batches whatever else is ready behind it."""
        ready: list[_Received] = []
        while member.buffer and len(ready) < (self.max_batch if member.batching else 1):
            received = member.buffer[0]
            # One past its deliveries is dead-lettered alone, never in the batch of the living.
            if ready and received.msg.metadata.num_delivered > self.policy.max_deliver:
                break
            member.buffer.popleft()
            received.source.buffered -= 1
            ready.append(received)
            if received.msg.metadata.num_delivered > self.policy.max_deliver:
                break
        return ready

    async def _hand_back(self, member: _Member) -> None:
        # Taken from the server but never started: the other members can have them at once.
        while member.buffer:
            received = member.buffer.popleft()
            received.source.buffered -= 1
            try:
                await received.msg.nak()
            except Exception as exc:
                log.debug("[bus] Could not hand a message back (it returns after ack_wait): %s", exc)

    # -- delivering --------------------------------------------------------------------------

    async def _deliver(self, member: _Member, ready: list[_Received]) -> None:
        group = member.group
        deliveries: list[Delivery] = []
        foreign: list[bool] = []
        for received in ready:
            metadata = received.msg.metadata
            message = self._decode(group.subject, received.msg, metadata)
            deliveries.append(Delivery(message, group.name, metadata.num_delivered))
            # Published by another process (or before this group was here): pending while in flight.
            foreign.append((message.id, group.name) not in self._expected)
            if foreign[-1]:
                self._hold(message.id)
        settled = [False] * len(ready)
        member.in_hand = ready
        try:
            if deliveries[0].attempt > self.policy.max_deliver:
                verdicts = [await self.run_handler(_exhausted, deliveries[0])]
            else:
                verdicts = await self.run_batch(member.handler, deliveries)
            member.in_hand = []
            for index, (received, delivery, verdict) in enumerate(zip(ready, deliveries, verdicts, strict=True)):
                settled[index] = await self._answer(received.msg, delivery, verdict)
        finally:
            member.in_hand = []
            for delivery, was_foreign, was_settled in zip(deliveries, foreign, settled, strict=True):
                if was_foreign:
                    self._release(delivery.message.id)
                elif was_settled:
                    self._unexpect((delivery.message.id, group.name))

    async def _answer(self, msg: Msg, delivery: Delivery, verdict: Verdict) -> bool:
        """Tell the server what became of a delivery; True once the message is settled for good."""
        try:
            if verdict.ack:
                await msg.ack()
                return True
            if verdict.retry_in is not None:
                await msg.nak(delay=verdict.retry_in)
                return False
            return await self._bury(msg, delivery, verdict)
        except Exception as exc:
            # Unanswered, the server delivers it again after ack_wait: at least once still holds.
            log.warning("[bus] Could not answer NATS for %s / %s: %s", delivery.message.subject, delivery.group, exc)
            return False

    async def _bury(self, msg: Msg, delivery: Delivery, verdict: Verdict) -> bool:
        assert self._js is not None
        dead = DeadLetter(
            id=str(uuid.uuid4()),
            group=delivery.group,
            attempts=delivery.attempt,
            error=verdict.error,
            failed_at=utcnow(),
            message=delivery.message,
        )
        try:
            await self._js.publish(
                f"{self._prefix}.dead.{dead.id}", _dead_encoder.encode(dead), headers={MSG_ID: dead.id}
            )
        except Exception as exc:
            # Not kept, so not dropped either: it comes back, and is dead-lettered then.
            log.warning("[bus] Could not keep the dead letter of event %s: %s", delivery.message.id, exc)
            await msg.nak(delay=self.policy.backoff_max)
            return False
        await msg.term()
        return True

    @staticmethod
    def _headers(message: Message) -> dict[str, str]:
        headers = {MSG_ID: message.id, OCCURRED_AT: message.occurred_at.isoformat()}
        if message.source:
            headers[SOURCE] = message.source
        return headers

    @staticmethod
    def _decode(subject: str, msg: Msg, metadata: Msg.Metadata) -> Message:
        # Whatever a foreign publisher left out is made up, rather than the message refused.
        headers = msg.headers or {}
        event_id = headers.get(EVENT_ID) or headers.get(MSG_ID) or f"{metadata.stream}:{metadata.sequence.stream}"
        occurred_at = metadata.timestamp
        if stamp := headers.get(OCCURRED_AT):
            with contextlib.suppress(ValueError):
                occurred_at = datetime.fromisoformat(stamp)
        return Message(
            id=event_id,
            subject=subject,
            data=bytes(msg.data),
            occurred_at=occurred_at,
            source=headers.get(SOURCE, ""),
        )

    # -- pending -----------------------------------------------------------------------------

    def _hold(self, message_id: str) -> None:
        self._outstanding[message_id] = self._outstanding.get(message_id, 0) + 1

    def _release(self, message_id: str) -> None:
        left = self._outstanding.get(message_id, 0) - 1
        if left > 0:
            self._outstanding[message_id] = left
        else:
            self._outstanding.pop(message_id, None)

    def _expect(self, key: tuple[str, str], consumer: str, now: float) -> None:
        entry = self._expected.get(key)
        if entry is None:
            self._expected[key] = _Expected(consumer, now)
        else:
            entry.count += 1
        self._hold(key[0])

    def _unexpect(self, key: tuple[str, str]) -> None:
        entry = self._expected.get(key)
        if entry is None:
            return
        entry.count -= 1
        if entry.count <= 0:
            del self._expected[key]
        self._release(key[0])

    # -- upkeep ------------------------------------------------------------------------------

    async def _keep(self) -> None:
        """Extend the ack deadline of slow work, and learn of messages settled by other processes."""
        tick = min(1.0, self.ack_wait / 3)
        while True:
            await asyncio.sleep(tick)
            try:
                await self._extend_leases()
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("[bus] Upkeep failed, trying again in %.1fs: %s", tick, exc)

    async def _extend_leases(self) -> None:
        now = asyncio.get_running_loop().time()
        stale = now - self.ack_wait / 3
        for group in list(self._groups.values()):
            for member in group.members:
                held = [*member.in_hand, *member.buffer]
                for received in held:
                    if received.seen < stale:
                        # Still ours: without this a slow handler's message would go to another member.
                        await received.msg.in_progress()
                        received.seen = now

    async def _reconcile(self) -> None:
        """Drop expectations another process's member of the same group has already settled."""
        if not self._expected or self._js is None:
            return
        old = asyncio.get_running_loop().time() - _RECONCILE_AFTER
        stale = [(key, entry) for key, entry in self._expected.items() if entry.seq and entry.since < old]
        floors: dict[str, int] = {}
        for consumer in {entry.consumer for _, entry in stale}:
            info = await self._js.consumer_info(self.stream, consumer)
            floors[consumer] = info.ack_floor.stream_seq if info.ack_floor else 0
        for key, entry in stale:
            # Everything up to the ack floor is settled by the group, whichever member did it.
            while self._expected.get(key) is entry and entry.seq <= floors.get(entry.consumer, 0):
                self._unexpect(key)

    # -- connection events -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        nc = self._nc
        # Failed attempts while (re)connecting are expected; connect() reports the last one.
        level = logging.DEBUG if nc is None or nc.is_reconnecting else logging.WARNING
        log.log(level, "[bus] NATS: %s", self._last_error)

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._closing:
            log.warning("[bus] Lost the connection to NATS at %s; reconnecting", self.server)

    async def _on_reconnected(self) -> None:
        log.info("[bus] Reconnected to NATS at %s", self.server)
        # A restarted server forgot our pull requests: ask again now rather than at their expiry.
        for group in list(self._groups.values()):
            for member in group.members:
                for source in member.sources:
                    source.request = 0
                    source.not_before = 0.0
                member.wake.set()
