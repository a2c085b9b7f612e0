from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar.openapi.spec import Example
from litestar.params import KwargDefinition

from app.common.errors import ErrorDetail
from app.common.events import OrderStatus
from app.common.http import Id, canonical_id


class OrderCreate(msgspec.Struct, frozen=True, rename="camel"):
    """Body of POST /api/orders."""

    ticket_id: Annotated[
        str,
        KwargDefinition(
            description="The ticket to reserve: its id, a UUID",
            format="uuid",
            examples=[Example(value="01975c0e-7b3a-7c41-9a56-3f2d1c0b9e8a")],
        ),
    ]

    def problems(self) -> list[ErrorDetail]:
        if canonical_id(self.ticket_id) is None:
            return [ErrorDetail("ticketId must be a UUID", "ticketId")]
        return []

    def normalized(self) -> OrderCreate:
        canonical = canonical_id(self.ticket_id)
        assert canonical is not None, "asked only once problems() found none"
        return msgspec.structs.replace(self, ticket_id=canonical)


class OrderTicket(msgspec.Struct):
    """The ticket as the orders module knows it: its own copy, kept up to date by events."""

    id: Id
    title: str
    price: float
    version: int


class Order(msgspec.Struct, rename="camel"):
    id: Id
    user_id: Id
    status: OrderStatus
    expires_at: Annotated[datetime, msgspec.Meta(description="15 minutes after creation; then the order is cancelled")]
    version: int
    ticket: OrderTicket
