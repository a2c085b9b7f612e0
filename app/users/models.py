from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.clock import utcnow
from app.common import revocation
from app.db import UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData()


class User(Base):
    __tablename__ = "users_user"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SignInFailure(Base):
    """A wrong password (or unknown email) for ``email`` from ``client``: what the failure window counts.

    In the database, not in memory: a restart must not hand an attacker five fresh guesses.
    """

    __tablename__ = "users_sign_in_failure"
    __table_args__ = (Index("ix_users_sign_in_failure_pair", "email", "client", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254))
    client: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


#: Tokens signed out here (see app/common/revocation.py).
revoked_tokens = revocation.table(Base.metadata, "users")
