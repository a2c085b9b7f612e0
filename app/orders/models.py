from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.clock import utcnow
from app.common import revocation
from app.common.events import OrderStatus
from app.common.versioning import next_version
from app.db import Money, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData()


class TicketReplica(Base):
    """This module's copy of a ticket: what an order needs to know, kept up to date by events."""

    __tablename__ = "orders_ticket"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Money())
    # Set from the event, never generated: a replica keeps the version it was told.
    version: Mapped[int] = mapped_column()

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class Order(Base):
    __tablename__ = "orders_order"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36))
    ticket_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[OrderStatus] = mapped_column(String(20))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column()

    __table_args__ = (
        # The database, not luck, guarantees one live order per ticket: concurrent attempts
        # to order a ticket race for this index and exactly one insert wins.
        Index(
            "uq_orders_order_live_ticket",
            "ticket_id",
            unique=True,
            sqlite_where=status != OrderStatus.CANCELLED.value,
            postgresql_where=status != OrderStatus.CANCELLED.value,
        ),
        Index("ix_orders_order_user", "user_id", "created_at"),
        # The expiry worker looks for the next order due.
        Index("ix_orders_order_expiry", "expires_at"),
    )
    __mapper_args__ = {"version_id_col": version, "version_id_generator": next_version}


#: Tokens signed out, as this module heard of them (see app/common/revocation.py).
revoked_tokens = revocation.table(Base.metadata, "orders")
