"""The bus interface every backend implements; the rules they share are in ``rules``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from app.bus.handlers import Handler
from app.bus.messages import BusStats, DeadLetter, Message
from app.bus.rules import DeliveryPolicy, Rules


class BusClosedError(RuntimeError):
    """The bus was asked to publish after it started shutting down."""


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
        self.rules = Rules(self, self.policy, self.stats, system=self.kind)

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
        """Messages their group could not handle, oldest first; they survive restarts."""

    @abstractmethod
    async def replay(self, dead_letter_id: str) -> list[str]:
        """Deliver a dead letter to its group again, with those that died waiting for its record.

        Returns the ids replayed, the asked one first; empty when there is no such dead letter.
        """

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
