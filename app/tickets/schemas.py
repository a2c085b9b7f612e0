from __future__ import annotations

from decimal import Decimal

import msgspec

from app.common.errors import ErrorDetail

TITLE_LENGTH = (1, 200)
PRICE_LIMIT = Decimal(1_000_000)
CENT = Decimal("0.01")


class TicketInput(msgspec.Struct):
    """Body of POST and PUT /api/tickets."""

    title: str
    price: Decimal

    def __post_init__(self) -> None:
        self.title = self.title.strip()

    def problems(self) -> list[ErrorDetail]:
        problems = []
        low, high = TITLE_LENGTH
        if not low <= len(self.title) <= high:
            problems.append(ErrorDetail(f"title must be {low} to {high} characters", "title"))
        if not 0 < self.price < PRICE_LIMIT:
            problems.append(ErrorDetail("price must be greater than 0 and below 1000000", "price"))
        elif self.price != self.price.quantize(CENT):
            problems.append(ErrorDetail("price must have at most two decimals", "price"))
        else:
            # One spelling for one amount: 1e2 and 100 are both 100.00 from here on, events included.
            self.price = self.price.quantize(CENT)
        return problems


class TicketView(msgspec.Struct, rename="camel"):
    id: str
    title: str
    # A JSON number; two decimals at most, so the float prints exactly what was stored.
    price: float
    user_id: str
    order_id: str | None
    version: int
