"""The delivery rules every backend applies the same way: ack, early, failed or dead.

- A handler that returns acknowledges the delivery.
- One that raises :class:`Retry` says the delivery came early (or lost a race): that is not a
  failure. It is parked until a delivery about the same record is applied in its group, or its
  backoff runs out; it is dead-lettered only once it has waited ``max_wait`` seconds in all,
  which outlasts any redelivery by a broker or a restarted process's outbox.
- One that raises anything else failed: it comes again after its backoff, and is dead-lettered
  at its ``max_deliver``-th failure.
- :class:`Unprocessable` is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.bus import signals, tracing
from app.bus.handlers import Handler, Retry, Unprocessable, is_keyed, takes_batches
from app.bus.messages import BusStats, DeadLetter, Delivery, Fate, Outcome, Verdict
from app.bus.parking import Parking
from app.clock import utcnow

log = logging.getLogger("ticketing.bus")


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often a failing delivery, and how long an early one, is tried before it is dead-lettered."""

    max_deliver: int = 10
    backoff: float = 0.05
    backoff_max: float = 5.0
    # Ten minutes: far longer than a broker takes to redeliver what a dead process held, or a
    # crashed process to restart and relay its outbox; short enough that a predecessor lost for
    # good is noticed (as a dead letter) the same day.
    max_wait: float = 600.0

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if self.backoff < 0 or self.backoff_max < self.backoff:
            raise ValueError("backoff must be >= 0 and backoff_max >= backoff")
        if not self.max_wait > 0:
            raise ValueError("max_wait must be > 0 seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before delivery number ``attempt + 1``: doubling, capped."""
        return float(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))


@dataclass(slots=True)
class Tries:
    """What the bus remembers of one message in one group between its deliveries."""

    failures: int = 0
    # Loop time of its first early refusal here: what ``max_wait`` is measured from.
    waiting_since: float | None = None
    # The parking's mark when its last run started (see ``Rules.wait``).
    mark: int = 0


class Rules:
    """Runs handlers and decides each delivery's fate; counts it, and tells the observers."""

    def __init__(self, bus: object, policy: DeliveryPolicy, stats: BusStats, system: str = "") -> None:
        self._bus = bus  # the sender of the signals: observers listen to one bus
        self._system = system  # what traces call the messaging system
        self.policy = policy
        self.stats = stats
        self.parking = Parking()

    async def run(self, handler: Handler, delivery: Delivery, tries: Tries) -> Verdict:
        """Run one delivery; ``tries`` is updated with what it came to."""
        self._begin(delivery)
        tries.mark = self.parking.mark()
        if not tracing.enabled():
            verdict = await self._run(handler, delivery, tries)
        else:
            with tracing.consuming(delivery, self._system) as span:
                verdict = await self._run(handler, delivery, tries)
                tracing.conclude(span, verdict)
        self._end(delivery, verdict)
        return verdict

    async def _run(self, handler: Handler, delivery: Delivery, tries: Tries) -> Verdict:
        try:
            outcome = await handler(delivery)
        except Retry as exc:
            verdict = self._early(handler, delivery, tries, str(exc) or "retry requested")
        except Unprocessable as exc:
            verdict = self._dead(delivery, f"unprocessable: {exc}", _key(handler, delivery))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            log.warning(
                "[bus] Handler failed for %s / %s (failure %d of %d): %s",
                delivery.message.subject,
                delivery.group,
                tries.failures + 1,
                self.policy.max_deliver,
                error,
                exc_info=exc,
            )
            verdict = self._failed(handler, delivery, tries, error)
        else:
            verdict = self._acked(handler, delivery, outcome or Outcome.APPLIED)
        return verdict

    async def run_batch(
        self, handler: Handler, deliveries: Sequence[Delivery], tries: Sequence[Tries]
    ) -> list[Verdict]:
        """Run deliveries that are ready together: as one batch when the handler can, else one by one."""
        # Traced, each delivery runs in a span of its own, which one batch for all could not give.
        if len(deliveries) > 1 and takes_batches(handler) and not tracing.enabled():
            try:
                outcomes = await handler.batch(deliveries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Something in the batch needs care (an early version, a race): go one by one.
                log.debug("[bus] Batch of %d fell back to one at a time: %s", len(deliveries), exc)
            else:
                verdicts = []
                for delivery, outcome in zip(deliveries, outcomes, strict=True):
                    self._begin(delivery)
                    verdict = self._acked(handler, delivery, outcome)
                    self._end(delivery, verdict)
                    verdicts.append(verdict)
                return verdicts
        return [await self.run(handler, delivery, kept) for delivery, kept in zip(deliveries, tries, strict=True)]

    def wait(self, group: str, verdict: Verdict, tries: Tries, release: Callable[[], None]) -> None:
        """Call ``release`` when the delivery is due again: after ``verdict.retry_in`` seconds, or,
        for an early one, as soon as a delivery about its record is applied in its group.

        A record that moved on while the delivery was being refused (a delivery about it applied
        since the run began, in the same batch say) makes it due at once: the wake-up it would
        have waited for has already happened.
        """
        assert verdict.retry_in is not None
        key = verdict.key if verdict.early else None
        moved = key is not None and self.parking.moved_since(group, key, tries.mark)
        self.parking.park(group, key, 0.0 if moved else verdict.retry_in, release)

    def failed_around_handler(self, handler: Handler, delivery: Delivery, tries: Tries, error: str) -> Verdict:
        """The verdict for a delivery the bus itself failed to see through (an observer raised, say).

        Retried like a failed handler, and dead-lettered past ``max_deliver`` like one too, so
        that a lasting fault cannot keep a message cycling for ever.
        """
        return self._failed(handler, delivery, tries, error)

    def dead_letter(self, delivery: Delivery, verdict: Verdict) -> DeadLetter:
        return DeadLetter(
            id=str(uuid.uuid4()),
            group=delivery.group,
            attempts=delivery.attempt,
            error=verdict.error,
            failed_at=utcnow(),
            message=delivery.message,
            key=verdict.key,
        )

    # -- the fates ---------------------------------------------------------------------------

    def _acked(self, handler: Handler, delivery: Delivery, outcome: Outcome) -> Verdict:
        self.stats.acked += 1
        if outcome is Outcome.APPLIED and (key := _key(handler, delivery)) is not None:
            self.parking.applied(delivery.group, key)
        return Verdict(Fate(outcome.value))

    def _early(self, handler: Handler, delivery: Delivery, tries: Tries, reason: str) -> Verdict:
        now = asyncio.get_running_loop().time()
        if tries.waiting_since is None:
            tries.waiting_since = now
        key = _key(handler, delivery)
        waited = now - tries.waiting_since
        if waited >= self.policy.max_wait:
            return self._dead(delivery, f"waited {waited:.0f}s for what comes before it: {reason}", key)
        delay = self.policy.delay(delivery.attempt)
        log.info(
            "[bus] Not yet: %s / %s will come again within %.3fs (%s)",
            delivery.message.subject,
            delivery.group,
            delay,
            reason,
        )
        return Verdict(Fate.EARLY, retry_in=delay, error=reason, key=key)

    def _failed(self, handler: Handler, delivery: Delivery, tries: Tries, error: str) -> Verdict:
        tries.failures += 1
        if tries.failures >= self.policy.max_deliver:
            return self._dead(delivery, error, _key(handler, delivery))
        return Verdict(Fate.FAILED, retry_in=self.policy.delay(tries.failures), error=error)

    def _dead(self, delivery: Delivery, error: str, key: str | None = None) -> Verdict:
        self.stats.dead_lettered += 1
        log.error(
            "[bus] Dead-lettered %s / %s after %d attempts: %s (event %s)",
            delivery.message.subject,
            delivery.group,
            delivery.attempt,
            error,
            delivery.message.id,
        )
        return Verdict(Fate.DEAD, error=error, key=key)

    # -- counting and telling ----------------------------------------------------------------

    def _begin(self, delivery: Delivery) -> None:
        self.stats.delivered += 1
        if delivery.attempt > 1:
            self.stats.redelivered += 1
        signals.delivery_started.send(self._bus, delivery=delivery)

    def _end(self, delivery: Delivery, verdict: Verdict) -> None:
        signals.delivery_finished.send(self._bus, delivery=delivery, verdict=verdict)


def _key(handler: Handler, delivery: Delivery) -> str | None:
    return handler.key(delivery) if is_keyed(handler) else None
