"""Request bodies: checking one changes nothing; its stored spelling is a new value, asked for explicitly."""

from __future__ import annotations

import uuid
from decimal import Decimal

from app.common.body import decode_body
from app.orders.schemas import OrderCreate
from app.tickets.schemas import TicketCreate, TicketUpdate
from app.users.schemas import Credentials, UserCreate


def test_checking_a_ticket_leaves_it_as_written() -> None:
    body = TicketCreate(title="  concert ", price=Decimal("1E+2"))
    assert body.problems() == []
    # Decimals compare by value: their text tells 1E+2 from 100.00.
    assert (body.title, str(body.price)) == ("  concert ", "1E+2")
    normal = body.normalized()
    assert (normal.title, str(normal.price)) == ("concert", "100.00")
    assert type(TicketUpdate(title=" x", price=Decimal(1)).normalized()) is TicketUpdate


def test_checking_an_order_leaves_its_ticket_id_as_written() -> None:
    written = str(uuid.uuid4()).upper()
    body = OrderCreate(ticket_id=written)
    assert body.problems() == []
    assert body.ticket_id == written
    assert body.normalized().ticket_id == written.lower()


def test_checking_credentials_leaves_the_email_as_written() -> None:
    for kind in (Credentials, UserCreate):
        body = kind(email=" Ada@Example.COM ", password="correct horse")
        assert body.problems() == []
        assert body.email == " Ada@Example.COM "
        assert body.normalized().email == "ada@example.com"


def test_a_decoded_body_is_in_its_stored_spelling() -> None:
    body = decode_body(b'{"title": " concert ", "price": 2e1}', TicketCreate)
    assert (body.title, str(body.price)) == ("concert", "20.00")
