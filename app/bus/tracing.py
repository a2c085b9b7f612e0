"""Traces across the bus: the W3C trace context travels with each message, from the request that
caused it into every listener that handles it, and on into the events those publish in turn.

- ``stage()`` opens a ``publish <subject>`` span (PRODUCER), child of whatever is current (the
  HTTP request, or the listener that reacted), and the message keeps its context (``traceparent``,
  ``tracestate``): in the outbox row, then in NATS headers over JetStream.
- The delivery rules open a ``process <subject>`` span (CONSUMER) around each handler, child of
  the message's context; what the handler stages is its child in turn.

Off unless :func:`enable` was called (``app/tracing.py`` does, when the standard ``OTEL_*``
settings ask for traces): then nothing here runs, and messages carry no context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.bus.messages import Delivery, Verdict

_state = {"on": False}
_tracer = trace.get_tracer("ticketing.bus")


def enable(on: bool = True) -> None:
    _state["on"] = on


def enabled() -> bool:
    return _state["on"]


def producing(subject: str, message_id: str, source: str) -> dict[str, str]:
    """A ``publish`` span for an event being staged; the context the message carries ({} when off)."""
    if not _state["on"]:
        return {}
    attributes = {
        "messaging.operation.type": "publish",
        "messaging.destination.name": subject,
        "messaging.message.id": message_id,
        "ticketing.module": source,
    }
    carrier: dict[str, str] = {}
    with _tracer.start_as_current_span(f"publish {subject}", kind=SpanKind.PRODUCER, attributes=attributes):
        propagate.inject(carrier)
    return carrier


@contextmanager
def consuming(delivery: Delivery, system: str) -> Iterator[Span]:
    """The ``process`` span a delivery's handler runs in, child of the context its message carries."""
    message = delivery.message
    attributes: dict[str, str | int] = {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.destination.name": message.subject,
        "messaging.consumer.group.name": delivery.group,
        "messaging.message.id": message.id,
        "ticketing.attempt": delivery.attempt,
    }
    parent = propagate.extract(message.trace)
    name = f"process {message.subject}"
    with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


def conclude(span: Span, verdict: Verdict) -> None:
    """Say on the span what became of the delivery: its fate, and an error for a failed or dead one."""
    span.set_attribute("ticketing.fate", verdict.fate.value)
    if verdict.fate.value in ("failed", "dead"):
        span.set_status(Status(StatusCode.ERROR, verdict.error))
