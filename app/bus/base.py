"""The bus interface every backend implements, and the delivery rules they share."""

from __future__ import annotations

import asyncio
import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Protocol, runtime_checkable

import msgspec

from app.bus import signals

log = logging.getLogger("ticketing.bus")


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One event as it crosses the bus: the payload stays bytes until a listener decodes it."""

    id: str
    subject: str
    data: bytes
    occurred_at: datetime
    source: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to one member of one group, for the attempt-th time."""

    message: Message
    group: str
    attempt: int


class Outcome(StrEnum):
    """What a handler did with a delivery it acknowledged; reported to observers only."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"


Handler = Callable[[Delivery], Awaitable[Outcome | None]]


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that can also take several deliveries at once, as one unit of work.

    ``batch`` either handles them all (returning one outcome each, in order) or raises; when
    it raises, nothing of it may have taken effect, and the bus hands the deliveries to
    ``__call__`` one by one, with the usual retry rules. Batching is an optimisation only.
    """

    async def __call__(self, delivery: Delivery) -> Outcome | None: ...

    async def batch(self, deliveries: Sequence[Delivery]) -> Sequence[Outcome]: ...


class Retry(Exception):
    """Raised by a handler for a message that came too early: deliver it again later."""


class Unprocessable(Exception):
    """Raised by a handler for a message no retry can help (it cannot be decoded): dead-letter it now."""


class BusClosedError(RuntimeError):
    """The bus was asked to publish after it started shutting down."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message its group could not handle within the allowed number of deliveries."""

    id: str
    group: str
    attempts: int
    error: str
    failed_at: datetime
    message: Message


@dataclass
class BusStats:
    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often and how patiently a failed delivery is retried before it is dead-lettered."""

    max_deliver: int = 10
    backoff: float = 0.05
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if self.backoff < 0 or self.backoff_max < self.backoff:
            raise ValueError("backoff must be >= 0 and backoff_max >= backoff")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before delivery number ``attempt + 1``: doubling, capped."""
        return float(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the bus does with a delivery once its handler has run."""

    ack: bool
    retry_in: float | None = None
    error: str = ""
    outcome: Outcome | None = None

    @property
    def dead(self) -> bool:
        return not self.ack and self.retry_in is None


class Bus(ABC):
    """Publish/subscribe by subject with queue groups, explicit ack, retries and dead letters."""

    kind: ClassVar[str]
    #: Whether the broker keeps a message once ``publish`` returns, whatever becomes of this
    #: process. A bus that does not (the in-memory one) announces instead, through
    #: ``signals.settled``, when every group of this process has settled a message.
    durable: ClassVar[bool] = True

    def __init__(self, policy: DeliveryPolicy | None = None) -> None:
        self.policy = policy or DeliveryPolicy()
        self.stats = BusStats()

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and make sure streams exist."""

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Stop taking messages and let the handlers in flight finish; publishing still works."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consuming (if not done yet), hand back what was not handled, then close."""

    @abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish messages in order; returns once the bus has taken responsibility for them."""

    @abstractmethod
    async def subscribe(self, subject: str, group: str, handler: Handler) -> None:
        """Join ``group`` on ``subject``: the group gets every message, one member handles each."""

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """Messages that ran out of deliveries, oldest first."""

    @abstractmethod
    async def replay(self, dead_letter_id: str) -> bool:
        """Deliver a dead letter to its group again; False when there is no such dead letter."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the bus answers."""

    def describe(self) -> str:
        """What this bus is connected to, for logs and ``/health``."""
        return self.kind

    @property
    @abstractmethod
    def pending(self) -> int:
        """Messages published here that a group of this process has not settled yet."""

    async def count_pending(self) -> int:
        """``pending``, plus what the broker holds for this process's groups, where it can tell."""
        return self.pending

    async def run_batch(self, handler: Handler, deliveries: Sequence[Delivery]) -> list[Verdict]:
        """Run deliveries that are ready together: as one batch when the handler can, else one by one."""
        if len(deliveries) > 1 and isinstance(handler, BatchHandler):
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
                    self._count_delivery(delivery)
                    signals.delivery_started.send(self, delivery=delivery)
                    self.stats.acked += 1
                    verdict = Verdict(ack=True, outcome=outcome)
                    signals.delivery_finished.send(self, delivery=delivery, verdict=verdict)
                    verdicts.append(verdict)
                return verdicts
        return [await self.run_handler(handler, delivery) for delivery in deliveries]

    def _count_delivery(self, delivery: Delivery) -> None:
        self.stats.delivered += 1
        if delivery.attempt > 1:
            self.stats.redelivered += 1

    async def run_handler(self, handler: Handler, delivery: Delivery) -> Verdict:
        """Run one delivery and decide, the same way for every backend, what happens next."""
        self._count_delivery(delivery)
        signals.delivery_started.send(self, delivery=delivery)
        try:
            outcome = await handler(delivery)
        except Retry as exc:
            verdict = self._failed(delivery, str(exc) or "retry requested", expected=True)
        except Unprocessable as exc:
            verdict = Verdict(ack=False, error=f"unprocessable: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            log.warning(
                "[bus] Handler failed for %s / %s (attempt %d of %d): %s",
                delivery.message.subject,
                delivery.group,
                delivery.attempt,
                self.policy.max_deliver,
                error,
                exc_info=exc,
            )
            verdict = self._failed(delivery, error, expected=False)
        else:
            self.stats.acked += 1
            verdict = Verdict(ack=True, outcome=outcome or Outcome.APPLIED)
        if verdict.dead:
            self._count_dead(delivery, verdict)
        signals.delivery_finished.send(self, delivery=delivery, verdict=verdict)
        return verdict

    def failed_around_handler(self, delivery: Delivery, error: str) -> Verdict:
        """The verdict for a delivery the bus itself failed to see through (an observer raised, say).

        Retried like a failed handler, and dead-lettered past ``max_deliver`` like one too, so
        that a lasting fault cannot keep a message cycling for ever.
        """
        verdict = self._failed(delivery, error, expected=False)
        if verdict.dead:
            self._count_dead(delivery, verdict)
        return verdict

    def _count_dead(self, delivery: Delivery, verdict: Verdict) -> None:
        self.stats.dead_lettered += 1
        log.error(
            "[bus] Dead-lettered %s / %s after %d attempts: %s (event %s)",
            delivery.message.subject,
            delivery.group,
            delivery.attempt,
            verdict.error,
            delivery.message.id,
        )

    def _failed(self, delivery: Delivery, error: str, *, expected: bool) -> Verdict:
        if delivery.attempt >= self.policy.max_deliver:
            return Verdict(ack=False, error=error)
        delay = self.policy.delay(delivery.attempt)
        if expected:
            log.info(
                "[bus] Not yet: %s / %s will come again in %.3fs (%s)",
                delivery.message.subject,
                delivery.group,
                delay,
                error,
            )
        return Verdict(ack=False, retry_in=delay, error=error)


def utcnow() -> datetime:
    return datetime.now(UTC)
