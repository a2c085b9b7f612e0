"""What the NATS bus does on a clock: keeps its leases, and learns what other processes settled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from nats.js import JetStreamContext

from app.bus.nats.members import Group
from app.bus.nats.pending import Pending

log = logging.getLogger("ticketing.bus")

# Settled elsewhere? Messages this process published and still expects are checked this late.
_RECONCILE_AFTER = 1.0


class Upkeep:
    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        ack_wait: float,
        pending: Pending,
        groups: Callable[[], Iterable[Group]],
    ) -> None:
        self._js = js
        self._stream = stream
        self._ack_wait = ack_wait
        self._pending = pending
        self._groups = groups

    async def run(self) -> None:
        tick = min(1.0, self._ack_wait / 3)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.extend_leases()
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("[bus] Upkeep failed, trying again in %.1fs: %s", tick, exc)

    async def extend_leases(self) -> None:
        """Tell the server that what this process holds is still its own: in hand, buffered or parked."""
        now = asyncio.get_running_loop().time()
        stale = now - self._ack_wait / 3
        for group in list(self._groups()):
            for member in group.members:
                for received in member.held():
                    if received.seen < stale:
                        # Still ours: without this a slow handler's message would go to another member.
                        await received.msg.in_progress()
                        received.seen = now

    async def waiting(self) -> int:
        """Messages the server holds for these groups, undelivered or unacknowledged; 0 if it cannot tell."""
        waiting = 0
        try:
            for group in list(self._groups()):
                for consumer in (group.durable, group.replay_durable):
                    info = await self._js.consumer_info(self._stream, consumer)
                    waiting += (info.num_pending or 0) + (info.num_ack_pending or 0)
        except Exception as exc:
            log.debug("[bus] Could not ask NATS what waits for this process: %s", exc)
            return 0
        return waiting

    async def reconcile(self) -> None:
        """Drop expectations another process's member of the same group has already settled."""
        overdue = self._pending.overdue(asyncio.get_running_loop().time() - _RECONCILE_AFTER)
        floors: dict[str, int] = {}
        for consumer in {entry.consumer for _, entry in overdue}:
            info = await self._js.consumer_info(self._stream, consumer)
            floors[consumer] = info.ack_floor.stream_seq if info.ack_floor else 0
        self._pending.settle_acked(overdue, floors)
