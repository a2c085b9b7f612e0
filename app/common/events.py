"""The integration events: the only data that crosses from one module to another.

This is the Python twin of the original course's ``common`` library: subjects, queue groups
and payloads, camelCase on the wire. A module imports these, never another module.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import msgspec


class Subjects(StrEnum):
    TICKET_CREATED = "ticket:created"
    TICKET_UPDATED = "ticket:updated"
    ORDER_CREATED = "order:created"
    ORDER_CANCELLED = "order:cancelled"
    USER_SIGNED_OUT = "user:signed-out"


class QueueGroups(StrEnum):
    TICKETS = "tickets-service"
    ORDERS = "orders-service"


class OrderStatus(StrEnum):
    CREATED = "created"
    CANCELLED = "cancelled"
    AWAITING_PAYMENT = "awaiting:payment"
    COMPLETE = "complete"


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of every payload: the id and version of the record it describes."""

    id: str
    version: int


class TicketCreated(Event, frozen=True, kw_only=True):
    """A ticket was put up for sale (version 0)."""

    title: str
    price: Decimal
    user_id: str


class TicketUpdated(Event, frozen=True, kw_only=True):
    """A ticket was saved: edited, reserved by an order or released; orderId is null when it is free."""

    title: str
    price: Decimal
    user_id: str
    order_id: str | None


class OrderTicket(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    price: Decimal


class OrderCreated(Event, frozen=True, kw_only=True):
    """An order reserved a ticket, until expiresAt."""

    status: OrderStatus
    user_id: str
    expires_at: datetime
    ticket: OrderTicket


class TicketRef(msgspec.Struct, frozen=True):
    id: str


class OrderCancelled(Event, frozen=True, kw_only=True):
    """An order was cancelled (by its owner, or when it expired): its ticket is free again."""

    ticket: TicketRef


class UserSignedOut(Event, frozen=True, kw_only=True):
    """A token was revoked at sign-out: ``id`` is the token's id (its ``jti``), ``version`` 0.

    Every module that accepts tokens refuses it from now on, until ``expiresAt``, when it would
    have stopped working anyway.
    """

    user_id: str
    expires_at: datetime


PAYLOADS: dict[Subjects, type[Event]] = {
    Subjects.TICKET_CREATED: TicketCreated,
    Subjects.TICKET_UPDATED: TicketUpdated,
    Subjects.ORDER_CREATED: OrderCreated,
    Subjects.ORDER_CANCELLED: OrderCancelled,
    Subjects.USER_SIGNED_OUT: UserSignedOut,
}
