"""The NATS bus itself: the Bus interface over JetStream, deliveries, retries and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError, ServiceUnavailableError

from app.bus import signals
from app.bus.base import Bus, BusClosedError
from app.bus.handlers import Handler, Unprocessable
from app.bus.messages import DeadLetter, Delivery, Message, Verdict
from app.bus.nats import wire
from app.bus.nats.layout import (
    STREAM_NAME,
    check_subject,
    consumer_exists,
    durable_name,
    ensure_consumer,
    ensure_stream,
    expired_so_far,
)
from app.bus.nats.members import Group, Member, PullPolicy, Received, Source
from app.bus.nats.pending import Pending
from app.bus.rules import DeliveryPolicy

log = logging.getLogger("ticketing.bus")

# Settled elsewhere? Messages this process published and still expects are checked this late.
_RECONCILE_AFTER = 1.0


async def _exhausted(delivery: Delivery) -> None:
    raise Unprocessable(
        f"delivered {delivery.attempt} times without an answer (its handler kept crashing or its process died)"
    )


class NatsBus(Bus):
    kind = "NATS"
    # Short, because it is how long the messages a dead (or paused) process held wait before the
    # group's other members get them: leases keep a slow handler's messages its own meanwhile.
    DEFAULT_ACK_WAIT = 5.0

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        policy: DeliveryPolicy | None = None,
        stream: str = "TICKETING",
        ack_wait: float = DEFAULT_ACK_WAIT,
        batch: int = 128,
        max_age: float = 0.0,
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
        if not STREAM_NAME.fullmatch(stream):
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
        if self.policy.max_wait <= ack_wait:
            raise ValueError(
                f"max_wait ({self.policy.max_wait:g}s) must outlast ack_wait ({ack_wait:g}s): an early "
                "delivery must be able to wait for a predecessor the server redelivers"
            )
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
        if max_age < 0:
            raise ValueError("max_age must be >= 0 seconds (0 keeps everything)")
        self.max_age = max_age
        self.max_batch = max_batch
        self._pulling = PullPolicy(batch, pull_expires, reconnect_wait, max_batch, self.policy.max_deliver)
        self._prefix = stream.lower()
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._groups: dict[tuple[str, str], Group] = {}
        self._by_subject: dict[str, list[Group]] = {}
        self._pending = Pending()
        self._last_error = ""
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        # Consuming stops before closing, so that what handlers commit meanwhile can still go out.
        self._consuming_stopped = False
        self._consumers_done = asyncio.Event()

    # -- the Bus interface -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None:
            return
        self._closing = False
        self._closed = asyncio.Event()
        self._consuming_stopped = False
        self._consumers_done = asyncio.Event()
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
            events = [f"{self._prefix}.events.>", f"{self._prefix}.replay.>"]
            await ensure_stream(self._js, self.stream, events, self.max_age)
            await ensure_stream(self._js, self.dead_stream, [f"{self._prefix}.dead.>"])
        except BaseException as exc:
            self._nc = self._js = None
            await nc.close()
            if isinstance(exc, ServiceUnavailableError):
                raise ConnectionError(
                    f"NATS at {self.server} does not answer JetStream requests: is JetStream on (nats-server -js)?"
                ) from exc
            raise
        self._keeper = asyncio.create_task(self._keep(), name=f"bus:nats-keeper/{self.stream}")

    async def stop_consuming(self) -> None:
        if self._consuming_stopped:
            await self._consumers_done.wait()
            return
        self._consuming_stopped = True
        members = [member for group in self._groups.values() for member in group.members]
        nc = self._nc
        # Stop taking messages first; draining hands what the server already sent to the buffers.
        if nc is not None and nc.is_connected:
            await asyncio.gather(*(member.drain() for member in members))
        for member in members:
            member.wake.set()
        # Each member finishes (and acks) the message in hand, then hands its buffer back.
        await asyncio.gather(*(member.task for member in members if member.task), return_exceptions=True)
        self._consumers_done.set()

    async def close(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        await self.stop_consuming()
        self._closing = True
        nc = self._nc
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
                self._pending.expect(key, group.durable, loop.time())
                expected.append((index, key))
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            # Pipelined: sent in order on one connection, so stored in order; then all acks awaited.
            for message in messages:
                future = await js.publish_async(
                    f"{self._prefix}.events.{message.subject}", message.data, headers=wire.headers(message)
                )
                futures.append(future)
            acks = await asyncio.wait_for(asyncio.gather(*futures), self._publish_timeout)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            for _, key in expected:
                self._pending.unexpect(key)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"NATS did not confirm {len(messages)} message(s) within {self._publish_timeout}s"
                ) from None
            raise
        for index, key in expected:
            if acks[index].duplicate:
                # Already in the stream (a retried publish): no new delivery will settle this one.
                self._pending.unexpect(key)
            else:
                self._pending.stored(key, acks[index].seq)
        for message in messages:
            self.stats.published += 1
            signals.published.send(self, message=message)

    async def subscribe(self, subject: str, group: str, handler: Handler) -> None:
        js = self._require()
        nc = self._nc
        assert nc is not None
        check_subject(subject)
        state = self._groups.get((subject, group))
        if state is None:
            durable = durable_name(subject, group)
            state = Group(subject, group, durable, f"{durable}-replay")
            # Only a bounded history can have lost something before a new group arrived: ask only then.
            new = bool(self.max_age) and not await consumer_exists(js, self.stream, durable)
            await ensure_consumer(js, self.stream, durable, f"{self._prefix}.events.{subject}", self.ack_wait)
            if new and (expired := await expired_so_far(js, self.stream)):
                # A new group starts from what the stream still holds; say so when that is not
                # everything, or the gap in its replica goes unnoticed.
                log.warning(
                    "[bus] Group %s is new on %s, and stream %s keeps %gs of history: older events "
                    "(%d expired from the stream so far) will not be delivered to it",
                    group,
                    subject,
                    self.stream,
                    self.max_age,
                    expired,
                )
            await ensure_consumer(
                js, self.stream, state.replay_durable, f"{self._prefix}.replay.{durable}", self.ack_wait
            )
            # Another subscribe of this group may have finished first while we awaited.
            state = self._groups.setdefault((subject, group), state)
            if state not in self._by_subject.setdefault(subject, []):
                self._by_subject[subject].append(state)
        sources = [Source.of(nc, self.stream, state.durable), Source.of(nc, self.stream, state.replay_durable)]
        member = Member(state, handler, sources, self._pulling)
        await member.listen(nc)
        member.task = asyncio.create_task(self._work(member), name=f"bus:{subject}/{group}")
        state.members.append(member)

    async def dead_letters(self) -> list[DeadLetter]:
        return [dead for _, dead in await self._dead_records()]

    async def replay(self, dead_letter_id: str) -> list[str]:
        js = self._require()
        if not wire.DEAD_ID.fullmatch(dead_letter_id):
            return []
        try:
            raw = await js.get_msg(self.dead_stream, subject=f"{self._prefix}.dead.{dead_letter_id}")
        except NotFoundError:
            return []
        dead = wire.dead_decoder.decode(raw.data or b"")
        replays = [(raw.seq or 0, dead)]
        if dead.key is not None:
            # What waited behind it, dead of waiting: the version rule lets each through in turn.
            replays += [
                (seq, other)
                for seq, other in await self._dead_records()
                if other.group == dead.group and other.key == dead.key and other.id != dead.id
            ]
        for seq, letter in replays:
            await self._replay_one(seq, letter)
        return [letter.id for _, letter in replays]

    async def _dead_records(self) -> list[tuple[int, DeadLetter]]:
        js = self._require()
        found: list[tuple[int, DeadLetter]] = []
        seq = 1
        while True:
            try:
                raw = await js.get_msg(self.dead_stream, seq=seq, subject=f"{self._prefix}.dead.>", next=True)
            except NotFoundError:
                return found
            seq = (raw.seq or seq) + 1
            try:
                found.append((seq - 1, wire.dead_decoder.decode(raw.data or b"")))
            except msgspec.DecodeError as exc:
                log.warning("[bus] Skipping what is not a dead letter at %s #%d: %s", self.dead_stream, seq - 1, exc)

    async def _replay_one(self, seq: int, dead: DeadLetter) -> None:
        js = self._require()
        durable = durable_name(dead.message.subject, dead.group)
        local = self._groups.get((dead.message.subject, dead.group))
        key = (dead.message.id, dead.group)
        if local is not None:
            self._pending.expect(key, local.replay_durable, asyncio.get_running_loop().time())
        # Its own msg id, so the de-duplication window does not swallow it as the original event;
        # the same one for the same dead letter, so a retried replay is delivered once.
        headers = wire.headers(dead.message) | {wire.MSG_ID: f"replay-{dead.id}", wire.EVENT_ID: dead.message.id}
        try:
            ack = await js.publish(f"{self._prefix}.replay.{durable}", dead.message.data, headers=headers)
        except BaseException:
            if local is not None:
                self._pending.unexpect(key)
            raise
        if local is not None:
            self._pending.stored(key, ack.seq)
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(self.dead_stream, seq)
        log.info("[bus] Replaying dead letter %s to %s / %s", dead.id, dead.message.subject, dead.group)

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
        return len(self._pending)

    async def count_pending(self) -> int:
        # Messages another process published wait on the server for our groups: count them too.
        # What is in hand here, or published here, is in both counts; hence the larger of the two.
        waiting = 0
        if self._js is not None:
            try:
                for group in list(self._groups.values()):
                    for consumer in (group.durable, group.replay_durable):
                        info = await self._js.consumer_info(self.stream, consumer)
                        waiting += (info.num_pending or 0) + (info.num_ack_pending or 0)
            except Exception as exc:
                log.debug("[bus] Could not ask NATS what waits for this process: %s", exc)
        return max(len(self._pending), waiting)

    def _require(self) -> JetStreamContext:
        if self._closing:
            raise BusClosedError("the NATS bus is shutting down")
        if self._js is None:
            raise RuntimeError("the NATS bus is not connected: call connect() first")
        return self._js

    # -- delivering --------------------------------------------------------------------------

    async def _work(self, member: Member) -> None:
        loop = asyncio.get_running_loop()
        while not self._consuming_stopped:
            try:
                wake_at = await member.top_up(self._nc, loop.time(), closing=self._consuming_stopped)
                if not member.buffer:
                    member.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(wake_at):
                            await member.wake.wait()
                    continue
                await self._deliver(member, member.take_ready())
            except asyncio.CancelledError:
                raise
            except Exception:
                # A member never dies of one bad message or one lost connection: log, pause, go on.
                log.exception("[bus] Member of %s / %s hit an error", member.group.subject, member.group.name)
                member.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._reconnect_wait):
                        await member.wake.wait()
        await member.hand_back()

    async def _deliver(self, member: Member, ready: list[Received]) -> None:
        group = member.group
        deliveries: list[Delivery] = []
        foreign: list[bool] = []
        for received in ready:
            metadata = received.msg.metadata
            message = wire.decode(group.subject, received.msg, metadata)
            deliveries.append(Delivery(message, group.name, metadata.num_delivered + received.reruns))
            # Published by another process (or before this group was here): pending while in flight.
            foreign.append(not self._pending.expects((message.id, group.name)))
            if foreign[-1]:
                self._pending.hold(message.id)
        settled = [False] * len(ready)
        member.in_hand = ready
        try:
            tries = [received.tries for received in ready]
            if ready[0].msg.metadata.num_delivered > self.policy.max_deliver:
                verdicts = [await self.rules.run(_exhausted, deliveries[0], tries[0])]
            else:
                verdicts = await self.rules.run_batch(member.handler, deliveries, tries)
            member.in_hand = []
            for index, (received, delivery, verdict) in enumerate(zip(ready, deliveries, verdicts, strict=True)):
                settled[index] = await self._answer(member, received, delivery, verdict)
        finally:
            member.in_hand = []
            for delivery, was_foreign, was_settled in zip(deliveries, foreign, settled, strict=True):
                if was_foreign:
                    self._pending.release(delivery.message.id)
                elif was_settled:
                    self._pending.unexpect((delivery.message.id, group.name))

    async def _answer(self, member: Member, received: Received, delivery: Delivery, verdict: Verdict) -> bool:
        """Tell the server what became of a delivery; True once the message is settled for good."""
        msg = received.msg
        try:
            if verdict.ack:
                await msg.ack()
                return True
            if verdict.early:
                # Kept, not nak'ed: the server's delivery count stays a count of failures and of
                # answers that never came, and the lease upkeep keeps the message ours meanwhile.
                member.park(received)
                self.rules.wait(member.group.name, verdict, received.tries, lambda: member.unpark(received))
                return False
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
        dead = self.rules.dead_letter(delivery, verdict)
        try:
            await self._js.publish(
                f"{self._prefix}.dead.{dead.id}", wire.dead_encoder.encode(dead), headers={wire.MSG_ID: dead.id}
            )
        except Exception as exc:
            # Not kept, so not dropped either: it comes back, and is dead-lettered then.
            log.warning("[bus] Could not keep the dead letter of event %s: %s", delivery.message.id, exc)
            await msg.nak(delay=self.policy.backoff_max)
            return False
        await msg.term()
        return True

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
                for received in member.held():
                    if received.seen < stale:
                        # Still ours: without this a slow handler's message would go to another member.
                        await received.msg.in_progress()
                        received.seen = now

    async def _reconcile(self) -> None:
        """Drop expectations another process's member of the same group has already settled."""
        if self._js is None:
            return
        overdue = self._pending.overdue(asyncio.get_running_loop().time() - _RECONCILE_AFTER)
        floors: dict[str, int] = {}
        for consumer in {entry.consumer for _, entry in overdue}:
            info = await self._js.consumer_info(self.stream, consumer)
            floors[consumer] = info.ack_floor.stream_seq if info.ack_floor else 0
        self._pending.settle_acked(overdue, floors)

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
        for group in list(self._groups.values()):
            for member in group.members:
                member.forget_requests()
