"""What the live view streams: one record per event published and per delivery finished.

A :class:`Feed` listens to the bus's blinker signals for one client. It connects with
``sender=bus`` so that two apps in one process (as in the tests) never hear each other, keeps
at most ``limit`` records (a slow client loses the oldest, and is told how many), and
disconnects when the client goes away, so a closed page leaves no receiver behind.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

import msgspec

from app.bus import Bus, Delivery, Message, Outcome, Verdict, signals

Result = Literal["published", "applied", "duplicate", "retried", "dead-lettered"]


class FeedEvent(msgspec.Struct, kw_only=True, rename="camel"):
    """One line of the live view. Ids only, no prices or users: the stream is for watching flow."""

    result: Result
    message_id: str
    subject: str
    version: int | None
    source: str
    occurred_at: datetime
    group: str | None = None
    attempt: int | None = None
    error: str = ""
    ticket_id: str | None = None
    order_id: str | None = None


def _about(message: Message) -> dict[str, Any]:
    """Version and record ids read from the payload, without trusting it to match the contract."""
    try:
        payload = msgspec.json.decode(message.data)
    except (msgspec.DecodeError, RecursionError):
        # Raising here would raise in the bus, which sends the signal this feed listens to.
        return {"version": None}
    if not isinstance(payload, dict):
        return {"version": None}
    version = payload.get("version")
    ids: dict[str, Any] = {"version": version if isinstance(version, int) else None}
    record = payload.get("id") if isinstance(payload.get("id"), str) else None
    if message.subject.startswith("ticket:"):
        ids["ticket_id"] = record
        order = payload.get("orderId")
        ids["order_id"] = order if isinstance(order, str) else None
    elif message.subject.startswith("order:"):
        ids["order_id"] = record
        ticket = payload.get("ticket")
        held = ticket.get("id") if isinstance(ticket, dict) else None
        ids["ticket_id"] = held if isinstance(held, str) else None
    return ids


def published_event(message: Message) -> FeedEvent:
    return FeedEvent(
        result="published",
        message_id=message.id,
        subject=message.subject,
        source=message.source,
        occurred_at=message.occurred_at,
        **_about(message),
    )


def delivery_event(delivery: Delivery, verdict: Verdict) -> FeedEvent:
    result: Result
    if verdict.ack:
        result = "duplicate" if verdict.outcome is Outcome.DUPLICATE else "applied"
    elif verdict.retry_in is not None:
        result = "retried"
    else:
        result = "dead-lettered"
    message = delivery.message
    return FeedEvent(
        result=result,
        message_id=message.id,
        subject=message.subject,
        source=message.source,
        occurred_at=message.occurred_at,
        group=delivery.group,
        attempt=delivery.attempt,
        error=verdict.error,
        **_about(message),
    )


class Feed:
    """One client's view of one bus: a bounded queue filled by the bus's signals.

    The bus sends its signals from the event loop's thread, so the queue needs no lock.
    """

    def __init__(self, bus: Bus, limit: int = 500) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.bus = bus
        self.dropped = 0
        self.closed = False
        self._queue: asyncio.Queue[FeedEvent | None] = asyncio.Queue(maxsize=limit)
        self._connected = False

    def connect(self) -> Feed:
        # Strong references: the feed disconnects explicitly, it is not left to the collector.
        signals.published.connect(self._on_published, sender=self.bus, weak=False)
        signals.delivery_finished.connect(self._on_delivery, sender=self.bus, weak=False)
        self._connected = True
        return self

    def disconnect(self) -> None:
        if self._connected:
            # From every sender (there is only the one): blinker forgets a receiver entirely only
            # then; disconnecting from one sender would keep it, and this feed, referenced forever.
            signals.published.disconnect(self._on_published)
            signals.delivery_finished.disconnect(self._on_delivery)
            self._connected = False

    def close(self) -> None:
        """Wake the reader and make it stop (the server is shutting down)."""
        self.closed = True
        self._put(None)

    async def get(self) -> FeedEvent | None:
        """The next record, or None once the feed is closed."""
        if self.closed:
            return None
        return await self._queue.get()

    def _on_published(self, _bus: Bus, *, message: Message) -> None:
        self._put(published_event(message))

    def _on_delivery(self, _bus: Bus, *, delivery: Delivery, verdict: Verdict) -> None:
        self._put(delivery_event(delivery, verdict))

    def _put(self, event: FeedEvent | None) -> None:
        if self._queue.full():
            # The client reads too slowly: lose the oldest rather than grow without bound.
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)
