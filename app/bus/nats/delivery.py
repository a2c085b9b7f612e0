"""Each member's loop: keep a pull open, hand what arrives to the delivery rules, answer the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client

from app.bus.handlers import Unprocessable
from app.bus.messages import Delivery, Verdict
from app.bus.nats import wire
from app.bus.nats.dead import DeadLetterStream
from app.bus.nats.members import Member, Received
from app.bus.nats.pending import Pending
from app.bus.rules import Rules

log = logging.getLogger("ticketing.bus")


async def _exhausted(delivery: Delivery) -> None:
    raise Unprocessable(
        f"delivered {delivery.attempt} times without an answer (its handler kept crashing or its process died)"
    )


class Deliveries:
    def __init__(self, nc: Client, rules: Rules, pending: Pending, dead: DeadLetterStream, pause: float) -> None:
        self._nc = nc
        self._rules = rules
        self._pending = pending
        self._dead = dead
        self._pause = pause
        # Set when consuming stops: the members finish what they hold and hand back the rest.
        self.stopped = False

    async def work(self, member: Member) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopped:
            try:
                wake_at = await member.top_up(self._nc, loop.time(), closing=self.stopped)
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
                    async with asyncio.timeout(self._pause):
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
            if ready[0].msg.metadata.num_delivered > self._rules.policy.max_deliver:
                verdicts = [await self._rules.run(_exhausted, deliveries[0], tries[0])]
            else:
                verdicts = await self._rules.run_batch(member.handler, deliveries, tries)
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
                self._rules.wait(member.group.name, verdict, received.tries, lambda: member.unpark(received))
                return False
            if verdict.retry_in is not None:
                await msg.nak(delay=verdict.retry_in)
                return False
            return await self._bury(received, delivery, verdict)
        except Exception as exc:
            # Unanswered, the server delivers it again after ack_wait: at least once still holds.
            log.warning("[bus] Could not answer NATS for %s / %s: %s", delivery.message.subject, delivery.group, exc)
            return False

    async def _bury(self, received: Received, delivery: Delivery, verdict: Verdict) -> bool:
        try:
            await self._dead.keep(self._rules.dead_letter(delivery, verdict))
        except Exception as exc:
            # Not kept, so not dropped either: it comes back, and is dead-lettered then.
            log.warning("[bus] Could not keep the dead letter of event %s: %s", delivery.message.id, exc)
            await received.msg.nak(delay=self._rules.policy.backoff_max)
            return False
        await received.msg.term()
        return True
