from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.errors import Conflict, Unauthorized
from app.common.ids import new_id
from app.users.models import User

# Argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes): memory-hard on purpose. Named,
# not the library's default, so that a new default cannot change it unnoticed.
_hasher = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
# Compared against when the email is unknown, so that a wrong email costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


async def _hash(password: str) -> str:
    # Hashing takes tens of milliseconds by design: keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def sign_up(session: AsyncSession, email: str, password: str) -> User:
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
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


async def sign_in(session: AsyncSession, email: str, password: str) -> User:
    user = await session.scalar(select(User).where(User.email == email))
    valid = await _verify(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid:
        raise Unauthorized("Invalid credentials")
    return user
