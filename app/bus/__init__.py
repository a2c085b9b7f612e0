"""The event bus: the interface modules talk through, its backends, and the outbox."""

from app.bus.base import Bus, BusClosedError
from app.bus.factory import create_bus
from app.bus.handlers import BatchHandler, Handler, KeyedHandler, Retry, Unprocessable
from app.bus.messages import BusStats, DeadLetter, Delivery, Fate, Message, Outcome, Verdict
from app.bus.rules import DeliveryPolicy

__all__ = [
    "BatchHandler",
    "Bus",
    "BusClosedError",
    "BusStats",
    "DeadLetter",
    "Delivery",
    "DeliveryPolicy",
    "Fate",
    "Handler",
    "KeyedHandler",
    "Message",
    "Outcome",
    "Retry",
    "Unprocessable",
    "Verdict",
    "create_bus",
]
