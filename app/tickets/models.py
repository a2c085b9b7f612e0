from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.common import revocation
from app.common.events import OrderStatus
from app.common.versioning import next_version
from app.db import Money


class Base(DeclarativeBase):
    metadata = MetaData()


class Ticket(Base):
    """A ticket for sale. Every save bumps ``version``; a save from a stale copy fails."""

    __tablename__ = "tickets_ticket"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Money())
    user_id: Mapped[str] = mapped_column(String(36))
    order_id: Mapped[str | None] = mapped_column(String(36), default=None)
    version: Mapped[int] = mapped_column()

    __mapper_args__ = {"version_id_col": version, "version_id_generator": next_version}


class OrderReplica(Base):
    """What this module knows of an order: enough to decide who holds a ticket.

    A cancellation that overtakes its order's creation is kept (status cancelled, version 1),
    so that the late creation is recognised as stale instead of reserving the ticket.
    """

    __tablename__ = "tickets_order"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[OrderStatus] = mapped_column(String(20))
    # Set from the event, never generated: a replica keeps the version it was told.
    version: Mapped[int] = mapped_column()

    __table_args__ = (Index("ix_tickets_order_ticket", "ticket_id"),)
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


#: Tokens signed out, as this module heard of them (see app/common/revocation.py).
revoked_tokens = revocation.table(Base.metadata, "tickets")
