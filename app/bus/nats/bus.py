"""The NATS bus itself: the Bus interface over JetStream; its parts do the delivering, upkeep and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import ServiceUnavailableError

from app.bus import signals
from app.bus.base import Bus, BusClosedError
from app.bus.handlers import Handler
from app.bus.messages import DeadLetter, Message
from app.bus.nats import layout, wire
from app.bus.nats.dead import DeadLetterStream
from app.bus.nats.delivery import Deliveries
from app.bus.nats.members import Group, Member, PullPolicy, Source
from app.bus.nats.options import NatsOptions
from app.bus.nats.pending import Pending
from app.bus.nats.upkeep import Upkeep
from app.bus.rules import DeliveryPolicy

log = logging.getLogger("ticketing.bus")


class NatsBus(Bus):
    kind = "NATS"

    def __init__(self, options: NatsOptions | None = None, policy: DeliveryPolicy | None = None) -> None:
        super().__init__(policy)
        self.options = options = options or NatsOptions()
        if self.policy.max_wait <= options.ack_wait:
            raise ValueError(
                f"max_wait ({self.policy.max_wait:g}s) must outlast ack_wait ({options.ack_wait:g}s): an early "
                "delivery must be able to wait for a predecessor the server redelivers"
            )
        self._pulling = PullPolicy(
            options.batch, options.pull_expires, options.reconnect_wait, options.max_batch, self.policy.max_deliver
        )
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._groups: dict[tuple[str, str], Group] = {}
        self._by_subject: dict[str, list[Group]] = {}
        self._pending = Pending()
        self._dead: DeadLetterStream | None = None
        self._deliveries: Deliveries | None = None
        self._upkeep: Upkeep | None = None
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
        options = self.options
        connection: dict[str, Any] = {
            "servers": list(options.servers),
            "name": f"ticketing {options.stream}",
            # Never give up: a restarted server is found again, and the fetch loops carry on.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": options.reconnect_wait,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        try:
            await asyncio.wait_for(nc.connect(**connection), options.connect_timeout)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            reason = self._last_error or exc
            raise ConnectionError(
                f"cannot reach NATS at {options.shown} within {options.connect_timeout}s: {reason}"
            ) from exc
        self._nc = nc
        self._js = js = nc.jetstream(timeout=options.publish_timeout)
        try:
            await layout.ensure_streams(js, options)
        except BaseException as exc:
            self._nc = self._js = None
            await nc.close()
            if isinstance(exc, ServiceUnavailableError):
                raise ConnectionError(
                    f"NATS at {options.shown} does not answer JetStream requests: is JetStream on (nats-server -js)?"
                ) from exc
            raise
        self._dead = DeadLetterStream(
            js, options, self._pending, lambda subject, group: self._groups.get((subject, group))
        )
        self._deliveries = Deliveries(nc, self.rules, self._pending, self._dead, options.reconnect_wait)
        self._upkeep = Upkeep(js, options.stream, options.ack_wait, self._pending, self._groups.values)
        self._keeper = asyncio.create_task(self._upkeep.run(), name=f"bus:nats-keeper/{options.stream}")

    async def stop_consuming(self) -> None:
        if self._consuming_stopped:
            await self._consumers_done.wait()
            return
        self._consuming_stopped = True
        if self._deliveries is not None:
            self._deliveries.stopped = True
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
        self.rules.parking.clear()
        self._groups.clear()
        self._by_subject.clear()
        self._nc = self._js = None
        self._dead = self._deliveries = self._upkeep = None
        self._closed.set()

    async def publish(self, messages: Sequence[Message]) -> None:
        js = self._require()
        for message in messages:
            layout.check_subject(message.subject)
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
                    self.options.events(message.subject), message.data, headers=wire.headers(message)
                )
                futures.append(future)
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.options.publish_timeout)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            for _, key in expected:
                self._pending.unexpect(key)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"NATS did not confirm {len(messages)} message(s) within {self.options.publish_timeout}s"
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
        assert self._nc is not None and self._deliveries is not None
        layout.check_subject(subject)
        state = self._groups.get((subject, group))
        if state is None:
            state = await self._join(js, subject, group)
        stream = self.options.stream
        sources = [Source.of(self._nc, stream, state.durable), Source.of(self._nc, stream, state.replay_durable)]
        member = Member(state, handler, sources, self._pulling)
        await member.listen(self._nc)
        member.task = asyncio.create_task(self._deliveries.work(member), name=f"bus:{subject}/{group}")
        state.members.append(member)

    async def _join(self, js: JetStreamContext, subject: str, group: str) -> Group:
        """The group's consumers on the server, made if missing: one on the events, one on its replays."""
        durable = layout.durable_name(subject, group)
        state = Group(subject, group, durable, f"{durable}-replay")
        await layout.ensure_consumers(js, self.options, state)
        # Another subscribe of this group may have finished first while we awaited.
        state = self._groups.setdefault((subject, group), state)
        if state not in self._by_subject.setdefault(subject, []):
            self._by_subject[subject].append(state)
        return state

    async def dead_letters(self) -> list[DeadLetter]:
        self._require()
        assert self._dead is not None
        return await self._dead.listing()

    async def replay(self, dead_letter_id: str) -> list[str]:
        self._require()
        assert self._dead is not None
        return await self._dead.replay(dead_letter_id)

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
        copies = f", {self.options.replicas} replicas" if self.options.replicas > 1 else ""
        return f"{self.kind} {self.options.shown} (JetStream, stream {self.options.stream}{copies})"

    @property
    def connected_to(self) -> str | None:
        """The server of the cluster this process talks to now (host:port), if connected."""
        url = self._nc.connected_url if self._nc is not None else None
        return f"{url.hostname}:{url.port}" if url is not None else None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def count_pending(self) -> int:
        # Messages another process published wait on the server for our groups: count them too.
        # What is in hand here, or published here, is in both counts; hence the larger of the two.
        waiting = await self._upkeep.waiting() if self._upkeep is not None else 0
        return max(len(self._pending), waiting)

    def _require(self) -> JetStreamContext:
        if self._closing:
            raise BusClosedError("the NATS bus is shutting down")
        if self._js is None:
            raise RuntimeError("the NATS bus is not connected: call connect() first")
        return self._js

    # -- connection events -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        nc = self._nc
        # Failed attempts while (re)connecting are expected; connect() reports the last one.
        level = logging.DEBUG if nc is None or nc.is_reconnecting else logging.WARNING
        log.log(level, "[bus] NATS: %s", self._last_error)

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._closing:
            log.warning("[bus] Lost the connection to NATS at %s; reconnecting", self.options.shown)

    async def _on_reconnected(self) -> None:
        log.info("[bus] Reconnected to NATS at %s", self.options.shown)
        for group in list(self._groups.values()):
            for member in group.members:
                member.forget_requests()
