"""Dead letters on NATS: a message each in `<stream>_DEAD`; a replay is a message for one group's replay consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from app.bus.messages import DeadLetter
from app.bus.nats import wire
from app.bus.nats.layout import durable_name
from app.bus.nats.members import Group
from app.bus.nats.options import NatsOptions
from app.bus.nats.pending import Pending

log = logging.getLogger("ticketing.bus")

# A replicated stream whose leader died answers nothing until the other servers elect another
# (seconds, after a server of a cluster is lost): a read that timed out is asked again until then.
ELECTION = 20.0


class DeadLetterStream:
    def __init__(
        self,
        js: JetStreamContext,
        options: NatsOptions,
        pending: Pending,
        local_group: Callable[[str, str], Group | None],
    ) -> None:
        self._js = js
        self._options = options
        self._pending = pending
        self._local_group = local_group

    async def keep(self, dead: DeadLetter) -> None:
        await self._js.publish(
            self._options.dead(dead.id), wire.dead_encoder.encode(dead), headers={wire.MSG_ID: dead.id}
        )

    async def listing(self) -> list[DeadLetter]:
        return [dead for _, dead in await self._records()]

    async def replay(self, dead_letter_id: str) -> list[str]:
        if not wire.DEAD_ID.fullmatch(dead_letter_id):
            return []
        try:
            raw = await self._get(subject=self._options.dead(dead_letter_id))
        except NotFoundError:
            return []
        dead = wire.dead_decoder.decode(raw.data or b"")
        replays = [(raw.seq or 0, dead)]
        if dead.key is not None:
            # What waited behind it, dead of waiting: the version rule lets each through in turn.
            replays += [
                (seq, other)
                for seq, other in await self._records()
                if other.group == dead.group and other.key == dead.key and other.id != dead.id
            ]
        for seq, letter in replays:
            await self._replay_one(seq, letter)
        return [letter.id for _, letter in replays]

    async def _records(self) -> list[tuple[int, DeadLetter]]:
        found: list[tuple[int, DeadLetter]] = []
        stream, seq = self._options.dead_stream, 1
        while True:
            try:
                raw = await self._get(seq=seq, subject=self._options.dead(">"), next=True)
            except NotFoundError:
                return found
            seq = (raw.seq or seq) + 1
            try:
                found.append((seq - 1, wire.dead_decoder.decode(raw.data or b"")))
            except msgspec.DecodeError as exc:
                log.warning("[bus] Skipping what is not a dead letter at %s #%d: %s", stream, seq - 1, exc)

    async def _get(self, **query: Any) -> RawStreamMsg:
        """One message of the dead-letter stream, asked again while the stream elects a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ELECTION
        while True:
            try:
                return await self._js.get_msg(self._options.dead_stream, **query)
            except NatsTimeout:
                if loop.time() >= deadline:
                    raise
                log.info("[bus] %s did not answer (electing a leader?); asking again", self._options.dead_stream)

    async def _replay_one(self, seq: int, dead: DeadLetter) -> None:
        local = self._local_group(dead.message.subject, dead.group)
        key = (dead.message.id, dead.group)
        if local is not None:
            self._pending.expect(key, local.replay_durable, asyncio.get_running_loop().time())
        # Its own msg id, so the de-duplication window does not swallow it as the original event;
        # the same one for the same dead letter, so a retried replay is delivered once.
        headers = wire.headers(dead.message) | {wire.MSG_ID: f"replay-{dead.id}", wire.EVENT_ID: dead.message.id}
        subject = self._options.replays(durable_name(dead.message.subject, dead.group))
        try:
            ack = await self._js.publish(subject, dead.message.data, headers=headers)
        except BaseException:
            if local is not None:
                self._pending.unexpect(key)
            raise
        if local is not None:
            self._pending.stored(key, ack.seq)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(self._options.dead_stream, seq)
        log.info("[bus] Replaying dead letter %s to %s / %s", dead.id, dead.message.subject, dead.group)
