"""The transactional outbox: events are rows written with the change that caused them.

``stage()`` remembers the row and the message on the caller's session; as the transaction commits,
every row it staged goes in with one Core INSERT (no ORM bookkeeping per event), in that same
transaction. The sessions a relay hands out (:meth:`app.bus.relay.Relay.sessions`) give it the
messages of each transaction once it commits (no query, no polling delay); a rolled-back
transaction's are forgotten.
Each row is claimed by the relay of the process that wrote it, for a short lease that the relay
renews while the event is on its way: a row whose claim has run out (its process died) is taken
over and relayed by any other process of the app, or by this one when it starts again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import Index, LargeBinary, MetaData, String, Text, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app import db
from app.bus import tracing
from app.bus.messages import Message
from app.clock import utcnow
from app.db import UTCDateTime

# Session info: the relay (by its owner id) whose claim a staged row starts with.
_OWNER_KEY = "ticketing.outbox.owner"
_LEASE_KEY = "ticketing.outbox.lease"
_STAGED_KEY = "ticketing.outbox.staged"
_ROWS_KEY = "ticketing.outbox.rows"
# How long a claim holds without being renewed: a dead process's rows go to another within it.
LEASE = timedelta(seconds=3)
# Decimals go out as JSON numbers, exactly as written: prices are numbers in every payload.
_encoder = msgspec.json.Encoder(decimal_format="number")
_traces = msgspec.json.Decoder(dict[str, str])


class OutboxBase(DeclarativeBase):
    metadata = MetaData()


class OutboxRecord(OutboxBase):
    __tablename__ = "bus_outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(50))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The relay relaying it, and until when; a row nobody holds (any more) is anybody's to relay.
    claimed_by: Mapped[str | None] = mapped_column(String(36), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The trace context the event carries, as JSON, when tracing is on.
    trace: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        # Only unsent rows are ever searched for: by the sweep, and when claims are renewed.
        Index(
            "ix_bus_outbox_unsent",
            "occurred_at",
            sqlite_where=published_at.is_(None),
            postgresql_where=published_at.is_(None),
        ),
    )

    def to_message(self) -> Message:
        return Message(
            id=self.id,
            subject=self.subject,
            data=self.payload,
            occurred_at=self.occurred_at,
            source=self.source,
            trace=_traces.decode(self.trace) if self.trace else {},
        )


# Built once: a Core INSERT on the table (through a Connection, so no ORM bulk-insert machinery).
_INSERT = insert(OutboxRecord)


def encode(payload: msgspec.Struct) -> bytes:
    """A payload as it goes on the wire: JSON, decimals as numbers."""
    return _encoder.encode(payload)


def stage(session: AsyncSession, source: str, subject: str, payload: msgspec.Struct) -> Message:
    """Write an event to the outbox in the session's transaction; it is published after commit.

    The session must be an :class:`OutboxSession`'s (``Relay.sessions()`` or :func:`sessions`).
    """
    if not isinstance(session.sync_session, OutboxSession):
        raise TypeError(
            f"stage() needs a session that writes the outbox (Relay.sessions() or outbox.sessions()), "
            f"not {type(session.sync_session).__name__}: its event would be lost"
        )
    now, message_id = utcnow(), str(uuid.uuid4())
    trace = tracing.producing(subject, message_id, source)
    message = Message(id=message_id, subject=subject, data=encode(payload), occurred_at=now, source=source, trace=trace)
    owner = session.info.get(_OWNER_KEY)
    row = {
        "id": message.id,
        "subject": subject,
        "source": source,
        "payload": message.data,
        "occurred_at": now,
        "published_at": None,
        "claimed_by": owner,
        "claimed_until": now + session.info.get(_LEASE_KEY, LEASE) if owner else None,
        "trace": msgspec.json.encode(trace).decode() if trace else None,
    }
    session.info.setdefault(_ROWS_KEY, []).append(row)
    session.info.setdefault(_STAGED_KEY, []).append(message)
    return message


def staged(session: Session) -> list[Message]:
    """The messages a transaction staged, taken off the session (after its commit or rollback)."""
    found: list[Message] = session.info.pop(_STAGED_KEY, [])
    return found


class OutboxSession(Session):
    """Sessions that write the outbox rows staged on them, as their transaction commits.

    ``stage()`` takes only these (``AsyncSession`` over them): any other session would commit
    the change and silently drop its event. A relay's sessions are of a subclass of its own.
    """


def sessions(
    engine: AsyncEngine,
    *,
    session_class: type[OutboxSession] = OutboxSession,
    owner: str | None = None,
    lease: timedelta = LEASE,
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine`` that ``stage()`` can write events in.

    ``owner``: the relay whose claim the rows start with, for ``lease`` (``Relay.sessions()`` passes
    its own and hears each commit); without one, the rows wait for any relay to take them over.
    """
    info = {_OWNER_KEY: owner, _LEASE_KEY: lease} if owner else {}
    return db.create_sessionmaker(engine, session_class=session_class, **info)


@event.listens_for(OutboxSession, "before_commit")
def _write_staged(session: Session) -> None:
    # Before the commit's own flush, in the same transaction (however it commits: commit(),
    # a begin() block): one INSERT for every row staged.
    if rows := session.info.pop(_ROWS_KEY, None):
        session.connection().execute(_INSERT, rows)


@event.listens_for(OutboxSession, "after_rollback")
def _forget_staged(session: Session) -> None:
    # Also when a failed flush rolled the transaction back on its own: nothing of it is kept.
    session.info.pop(_ROWS_KEY, None)
    session.info.pop(_STAGED_KEY, None)
