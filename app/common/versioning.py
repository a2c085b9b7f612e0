"""Versions: how every save bumps one, the rule every listener follows (apply only the next one), and losing a race."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.bus import Retry

# A record's version at its INSERT, as in the original (mongoose-update-if-current): known before
# the INSERT, so that a creation's event is staged without a flush of its own.
FIRST_VERSION = 0


def next_version(current: int | None) -> int:
    """``version_id_generator`` of the records a module owns: :data:`FIRST_VERSION` first, then
    one more at every save."""
    return FIRST_VERSION if current is None else current + 1


async def saved(session: AsyncSession) -> bool:
    """Flush the session's changes, each an ``UPDATE ... WHERE version = <the version read>``.

    False when another writer saved one of those records first: the transaction is then rolled
    back, and the use case that owns it answers (a 409, say) or reads again.
    """
    try:
        await session.flush()
    except StaleDataError:
        await session.rollback()
        return False
    return True


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

    Used by whoever opened the listener's session (``BoundListener``), which owns its transaction:
    the listener-side use cases never commit or roll back themselves.

    Losing means a stale version (another writer saved first) or a duplicate key (another
    delivery of the same event inserted first); either way the next attempt re-reads.
    """
    try:
        yield
    except (StaleDataError, IntegrityError) as exc:
        await session.rollback()
        raise Retry(f"lost a race with a concurrent write ({type(exc).__name__}); re-reading") from None
