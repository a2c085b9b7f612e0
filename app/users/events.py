"""What the users module publishes: that a token was signed out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.bus.outbox import stage
from app.common.events import Subjects, UserSignedOut

MODULE = "users"
PUBLISHES = (Subjects.USER_SIGNED_OUT,)


def stage_user_signed_out(session: AsyncSession, token_id: str, user_id: str, expires_at: datetime) -> None:
    stage(
        session,
        MODULE,
        Subjects.USER_SIGNED_OUT,
        UserSignedOut(id=token_id, version=0, user_id=user_id, expires_at=expires_at),
    )
