from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from app.common.errors import ErrorDetail
from app.common.events import OrderStatus


class OrderInput(msgspec.Struct, rename="camel"):
    """Body of POST /api/orders."""

    ticket_id: str

    def problems(self) -> list[ErrorDetail]:
        try:
            self.ticket_id = str(uuid.UUID(self.ticket_id))
        except ValueError:
            return [ErrorDetail("ticketId must be a UUID", "ticketId")]
        return []


class OrderTicketView(msgspec.Struct):
    id: str
    title: str
    price: float
    version: int


class OrderView(msgspec.Struct, rename="camel"):
    id: str
    user_id: str
    status: OrderStatus
    expires_at: datetime
    version: int
    ticket: OrderTicketView
