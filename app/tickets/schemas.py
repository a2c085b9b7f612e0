from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

import msgspec
from litestar.openapi.spec import Example
from litestar.params import KwargDefinition

from app.common.body import BLANK, SOLID
from app.common.errors import ErrorDetail
from app.common.http import Id

TITLE_LENGTH = (1, 200)
PRICE_LIMIT = Decimal(1_000_000)
CENT = Decimal("0.01")

# The OpenAPI document states the same rules as problems() below, so that a client (or a
# fuzzer) knows them; msgspec ignores these annotations, the checks are problems()'s.
Title = Annotated[
    str,
    KwargDefinition(
        description=f"{TITLE_LENGTH[0]} to {TITLE_LENGTH[1]} characters once surrounding whitespace is trimmed",
        # Non-blank, at most 200 characters from the first to the last that is not blank, no NUL.
        pattern=f"^{BLANK}*{SOLID}(?:[^\\x00]{{0,{TITLE_LENGTH[1] - 2}}}{SOLID})?{BLANK}*$",
        examples=[Example(value="concert")],
    ),
]
Price = Annotated[
    Decimal,
    KwargDefinition(
        description="A JSON number above 0 and below 1000000, with at most two decimals; stored exactly",
        # Bounds as schema_extra: Litestar drops a ``gt`` of 0 as if it were unset.
        schema_extra={"exclusive_minimum": 0, "exclusive_maximum": int(PRICE_LIMIT), "multiple_of": float(CENT)},
        examples=[Example(value=20)],
    ),
]


class TicketCreate(msgspec.Struct, frozen=True):
    """Body of POST /api/tickets."""

    title: Title
    price: Price

    def problems(self) -> list[ErrorDetail]:
        problems = []
        low, high = TITLE_LENGTH
        if not low <= len(self.title.strip()) <= high:
            problems.append(ErrorDetail(f"title must be {low} to {high} characters", "title"))
        if not 0 < self.price < PRICE_LIMIT:
            problems.append(ErrorDetail("price must be greater than 0 and below 1000000", "price"))
        elif self.price != self.price.quantize(CENT):
            problems.append(ErrorDetail("price must have at most two decimals", "price"))
        return problems

    def normalized(self) -> Self:
        # One spelling for one amount: 1e2 and 100 are both 100.00 from here on, events included.
        return msgspec.structs.replace(self, title=self.title.strip(), price=self.price.quantize(CENT))


class TicketUpdate(TicketCreate, frozen=True):
    """Body of PUT /api/tickets/{id}: the title and price the ticket has from now on."""


class Ticket(msgspec.Struct, rename="camel"):
    id: Id
    title: Annotated[str, msgspec.Meta(examples=["concert"])]
    # A JSON number; two decimals at most, so the float prints exactly what was stored.
    price: Annotated[float, msgspec.Meta(examples=[20])]
    user_id: Id
    order_id: Annotated[str | None, msgspec.Meta(description="The order that holds the ticket; null when it is free")]
    version: Annotated[int, msgspec.Meta(description="0 when created, one more at every save; the ETag names it")]
