"""What crosses the bus, and what becomes of each delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One event as it crosses the bus: the payload stays bytes until a listener decodes it."""

    id: str
    subject: str
    data: bytes
    occurred_at: datetime
    source: str = ""
    # W3C trace context (traceparent, tracestate) when tracing is on: see app/bus/tracing.py.
    trace: dict[str, str] = msgspec.field(default_factory=dict)


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


class Fate(StrEnum):
    """What became of one delivery, as ``/metrics`` and the live view tell it."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    EARLY = "early"  # refused until what comes before it has been applied: not a failure
    FAILED = "failed"  # its handler raised: retried, and dead-lettered past max_deliver
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the bus does with a delivery once its handler has run."""

    fate: Fate
    # Seconds until it comes again, for an early or failed delivery; None once it is settled.
    retry_in: float | None = None
    error: str = ""
    # The record the delivery is about, when its handler can tell: an early one comes again as
    # soon as a delivery about it is applied; a dead one is replayed with the others about it.
    key: str | None = None

    @property
    def ack(self) -> bool:
        return self.fate in (Fate.APPLIED, Fate.DUPLICATE)

    @property
    def dead(self) -> bool:
        return self.fate is Fate.DEAD

    @property
    def early(self) -> bool:
        return self.fate is Fate.EARLY

    @property
    def outcome(self) -> Outcome | None:
        return Outcome(self.fate.value) if self.ack else None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message its group could not handle: it failed too often, or waited too long for its predecessor."""

    id: str
    group: str
    attempts: int
    error: str
    failed_at: datetime
    message: Message
    # The record it is about, when its handler could tell: replaying one dead letter replays every
    # dead letter of its group about the same record, so that what waited behind it comes too.
    key: str | None = None


@dataclass
class BusStats:
    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
