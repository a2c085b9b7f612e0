"""The version rule every listener follows: apply only the next version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.bus import Retry


class Step(Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"


def next_step(record: str, stored: int | None, incoming: int) -> Step:
    """What to do with ``incoming`` when the copy holds ``stored`` (None: no copy yet).

    The next version is applied; one already applied is a duplicate; one further ahead
    came early, so the delivery is refused (:class:`Retry`) until its predecessor lands.
    """
    expected = 0 if stored is None else stored + 1
    if incoming == expected:
        return Step.APPLY
    if stored is not None and incoming <= stored:
        return Step.DUPLICATE
    have = "nothing" if stored is None else f"version {stored}"
    raise Retry(f"{record} version {incoming} is early: have {have}, need {expected} first")


@asynccontextmanager
async def retry_if_raced(session: AsyncSession) -> AsyncIterator[None]:
    """A listener's write that loses an optimistic-locking race is retried, not failed.

    Losing means a stale version (another writer saved first) or a duplicate key (another
    delivery of the same event inserted first); either way the next attempt re-reads.
    """
    try:
        yield
    except (StaleDataError, IntegrityError) as exc:
        await session.rollback()
        raise Retry(f"lost a race with a concurrent write ({type(exc).__name__}); re-reading") from None
