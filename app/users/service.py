"""The users module's use cases: sign-up, sign-in (with its failure window) and sign-out.

Each is one transaction, committed here. None holds a database connection while it hashes a
password: the hash takes tens of milliseconds and 64 MiB, and a flood of sign-ins waiting for one
would otherwise empty the connection pool.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime, timedelta

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import Outcome
from app.clock import utcnow
from app.common import revocation
from app.common.errors import Conflict, TooManyRequests, Unauthorized
from app.common.ids import new_id
from app.users.events import stage_user_signed_out
from app.users.models import SignInFailure, User, revoked_tokens

# Argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes): memory-hard on purpose. Named,
# not the library's default, so that a new default cannot change it unnoticed.
_hasher = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
# Compared against when the email is unknown, so that a wrong email costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
# Hashes at once per process. Each takes 64 MiB while it runs: one at a time keeps a flood of
# sign-ins within 100 MiB of an idle process, and the others wait their turn, holding nothing.
HASHING_AT_ONCE = 1
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

#: SPEC's failure window: this many failed sign-ins for one email from one client ...
FAILURES_ALLOWED = 5
#: ... within this long, and that pair gets 429 until the oldest of them is this old.
FAILURE_WINDOW = timedelta(minutes=15)


def _gate() -> asyncio.Semaphore:
    # One per event loop: a semaphore made on one loop cannot be waited on from another.
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(HASHING_AT_ONCE)
    return gate


async def _hash(password: str) -> str:
    # Hashing takes tens of milliseconds by design: keep it off the event loop.
    async with _gate():
        return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def sign_up(session: AsyncSession, email: str, password: str) -> User:
    taken = await session.scalar(select(User.id).where(User.email == email))
    await session.rollback()  # gives the connection back while the password is hashed
    if taken is not None:
        raise Conflict("Email in use", field="email")
    user = User(id=new_id(), email=email, password_hash=await _hash(password))
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        # Two sign-ups with one email raced; the unique index let exactly one through.
        await session.rollback()
        raise Conflict("Email in use", field="email") from None
    return user


async def sign_in(session: AsyncSession, email: str, password: str, client: str) -> User:
    """The account, if ``password`` is its own; 401 if not; 429 while ``email`` and ``client`` are locked out."""
    # The window is checked in turn with the hashing: of many guesses sent at once, no more than
    # the window allows get as far as a hash.
    async with _gate():
        await _refuse_if_locked_out(session, email, client)
        found = (await session.execute(select(User.id, User.password_hash).where(User.email == email))).one_or_none()
        await session.rollback()  # gives the connection back while the password is checked
        valid = await _verify(found.password_hash if found else _DUMMY_HASH, password)
        if found is None or not valid:
            await _count_failure(session, email, client)
            raise Unauthorized("Invalid credentials")
    await session.execute(delete(SignInFailure).where(SignInFailure.email == email, SignInFailure.client == client))
    await session.commit()
    return User(id=found.id, email=email, password_hash=found.password_hash)


async def _refuse_if_locked_out(session: AsyncSession, email: str, client: str) -> None:
    now = utcnow()
    recent = (
        select(SignInFailure.failed_at)
        .where(
            SignInFailure.email == email,
            SignInFailure.client == client,
            SignInFailure.failed_at > now - FAILURE_WINDOW,
        )
        .order_by(SignInFailure.failed_at.desc())
        .limit(FAILURES_ALLOWED)
        .subquery()
    )
    count, oldest = (await session.execute(select(func.count(), func.min(recent.c.failed_at)))).one()
    if count >= FAILURES_ALLOWED:
        await session.rollback()
        waited: datetime = oldest
        retry_after = (waited + FAILURE_WINDOW - now).total_seconds()
        raise TooManyRequests("Too many failed sign-ins for this email: try again in {seconds} seconds", retry_after)


async def _count_failure(session: AsyncSession, email: str, client: str) -> None:
    now = utcnow()
    # Failures older than the window count for nothing: each new one clears them out.
    await session.execute(delete(SignInFailure).where(SignInFailure.failed_at <= now - FAILURE_WINDOW))
    session.add(SignInFailure(email=email, client=client, failed_at=now))
    await session.commit()


async def sign_out(session: AsyncSession, token_id: str, user_id: str, expires_at: datetime) -> None:
    """Revoke one token: kept here and announced, so that every module refuses it from now on."""
    if await revocation.record(session, revoked_tokens, token_id, expires_at) == Outcome.APPLIED:
        stage_user_signed_out(session, token_id, user_id, expires_at)
    await session.commit()
