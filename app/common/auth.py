"""Who is calling: signed JWTs, from ``Authorization: Bearer`` or the session cookie.

Users issue tokens; every module checks them with the shared secret, so a process running only
``orders`` accepts tokens issued by the process running ``users``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.bus.base import utcnow
from app.common.errors import Unauthorized

SESSION_COOKIE = "session"
_ALGORITHM = "HS256"
_USER_KEY = "ticketing.user"


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    email: str


class Tokens:
    """Issues and reads the app's JWTs (HS256, with expiry)."""

    def __init__(self, secret: str, ttl: timedelta = timedelta(hours=24)) -> None:
        self._secret = secret
        self.ttl = ttl

    def issue(self, user: CurrentUser) -> str:
        now = utcnow()
        claims = {"sub": user.id, "email": user.email, "iat": now, "exp": now + self.ttl}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def read(self, token: str) -> CurrentUser | None:
        """The user a token names, or None when it is forged, expired, or not ours."""
        try:
            # Pinning the algorithm is what rejects "alg: none" and key-confusion tokens.
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.PyJWTError:
            return None
        user_id, email = claims.get("sub"), claims.get("email")
        if not isinstance(user_id, str) or not isinstance(email, str):
            return None
        return CurrentUser(user_id, email)


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    """The caller, read once per request from the bearer token, else from the session cookie."""
    scope_state = connection.scope.setdefault("state", {})
    if _USER_KEY in scope_state:
        cached: CurrentUser | None = scope_state[_USER_KEY]
        return cached
    tokens: Tokens = connection.app.state.tokens
    header = connection.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        user = tokens.read(credentials.strip())
    elif cookie := connection.cookies.get(SESSION_COOKIE):
        user = tokens.read(cookie)
    else:
        user = None
    scope_state[_USER_KEY] = user
    return user


def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: 401 unless the request carries a valid token. Runs before the body is read."""
    if current_user(connection) is None:
        raise Unauthorized("Not authorized: sign in, or send a valid Bearer token")


async def provide_user(request: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser:
    """Dependency for routes behind :func:`require_user`."""
    user = current_user(request)
    if user is None:
        raise Unauthorized("Not authorized: sign in, or send a valid Bearer token")
    return user
