"""Tokens revoked at sign-out: each module keeps their ids in a table of its own, and every process
refuses them within a second.

The users module writes its table as it signs a token out and announces ``user:signed-out``; the
other modules' listeners copy each revocation into theirs. A queue group hands an event to one
process of a module only, so the processes do not learn of revocations from the bus: each reads its
modules' tables every :data:`EVERY` seconds for rows added since it last looked, and tells its
:class:`~app.common.auth.Tokens`. A restart reads every row that has not expired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, MetaData, String, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bus import Outcome
from app.clock import utcnow
from app.common.auth import Tokens
from app.common.events import QueueGroups, Subjects, UserSignedOut
from app.common.module import Listener
from app.db import UTCDateTime

log = logging.getLogger("ticketing.revocation")

#: How often a process reads its revocation tables: the "within a second" of SPEC, with room to spare.
EVERY = 0.25
# Rows are read again for this long after they were written: a transaction that committed late
# (PostgreSQL commits concurrent inserts in any order) is still seen. Re-reading one is harmless.
_OVERLAP = timedelta(seconds=10)


def table(metadata: MetaData, module: str) -> Table:
    """The revoked-token table of ``module``, in that module's own metadata (and migrations)."""
    return Table(
        f"{module}_revoked_token",
        metadata,
        Column("token_id", String(36), primary_key=True),
        Column("expires_at", UTCDateTime(), nullable=False),
        Column("revoked_at", UTCDateTime(), nullable=False),
        Index(f"ix_{module}_revoked_token_revoked_at", "revoked_at"),
    )


async def record(session: AsyncSession, revoked: Table, token_id: str, expires_at: datetime) -> Outcome:
    """Keep a revocation in the session's transaction; a duplicate changes nothing."""
    now = utcnow()
    # Revocations past their token's expiry are dead weight: each new one clears them out.
    await session.execute(delete(revoked).where(revoked.c.expires_at <= now))
    if expires_at <= now:
        return Outcome.DUPLICATE  # the token has stopped working on its own
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(revoked).values(token_id=token_id, expires_at=expires_at, revoked_at=now)
    result = await session.execute(insert.on_conflict_do_nothing(index_elements=["token_id"]))
    return Outcome.APPLIED if getattr(result, "rowcount", 1) else Outcome.DUPLICATE


def listener(revoked: Table, group: QueueGroups) -> Listener[UserSignedOut]:
    """A module's listener that copies each sign-out into its own ``revoked`` table."""

    async def on_user_signed_out(event: UserSignedOut, session: AsyncSession) -> Outcome:
        return await record(session, revoked, event.id, event.expires_at)

    return Listener(Subjects.USER_SIGNED_OUT, group, on_user_signed_out, about=lambda event: event.id)


class Revocations:
    """Keeps one process's :class:`Tokens` told of every revocation in its modules' tables."""

    def __init__(self, tokens: Tokens, tables: Sequence[Table], sessions: async_sessionmaker[AsyncSession]) -> None:
        self._tokens = tokens
        self._tables = list(tables)
        self._sessions = sessions
        self._since: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read every revocation still in force, then keep reading new ones in the background."""
        await self.read()
        self._task = asyncio.create_task(self._follow(), name="revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def read(self) -> int:
        """Tell the tokens of the revocations added since the last read (all of them, the first time)."""
        started = utcnow()
        found = 0
        async with self._sessions() as session:
            for revoked in self._tables:
                query = select(revoked.c.token_id, revoked.c.expires_at).where(revoked.c.expires_at > started)
                if self._since is not None:
                    query = query.where(revoked.c.revoked_at > self._since - _OVERLAP)
                for token_id, expires_at in await session.execute(query):
                    self._tokens.revoke(token_id, expires_at.timestamp())
                    found += 1
        self._since = started
        return found

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            try:
                await self.read()
            except Exception:
                # A database that is briefly away must not end the reading: try again next round.
                log.warning("Could not read the revoked tokens; trying again", exc_info=True)
