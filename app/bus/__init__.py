"""The event bus: the interface modules talk through, its backends, and the outbox."""

from app.bus.base import (
    Bus,
    BusClosedError,
    BusStats,
    DeadLetter,
    Delivery,
    DeliveryPolicy,
    Handler,
    Message,
    Outcome,
    Retry,
    Unprocessable,
    Verdict,
)
from app.bus.factory import create_bus

__all__ = [
    "Bus",
    "BusClosedError",
    "BusStats",
    "DeadLetter",
    "Delivery",
    "DeliveryPolicy",
    "Handler",
    "Message",
    "Outcome",
    "Retry",
    "Unprocessable",
    "Verdict",
    "create_bus",
]
