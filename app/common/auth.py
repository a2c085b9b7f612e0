"""Who is calling: signed JWTs, from ``Authorization: Bearer`` or the session cookie.

Users issue tokens; every module checks them with the shared secret, so a process running only
``orders`` accepts tokens issued by the process running ``users``.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.clock import utcnow
from app.common.errors import Unauthorized

SESSION_COOKIE = "session"
_ALGORITHM = "HS256"
_USER_KEY = "ticketing.user"
# PyJWT would warn at every token about a short key; the app says it once, at start.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    email: str


class Tokens:
    """Issues and reads the app's JWTs (HS256, with expiry).

    A client sends the same token with every request, and checking it is a good part of a
    request's cost: tokens already verified are remembered (a bounded number) until they expire.
    """

    def __init__(
        self,
        secret: str,
        ttl: timedelta = timedelta(hours=24),
        remember: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.ttl = ttl
        self._clock = clock
        self._verified: OrderedDict[str, tuple[CurrentUser, float]] = OrderedDict()
        self._remember = remember

    def issue(self, user: CurrentUser) -> str:
        now = utcnow()
        claims = {"sub": user.id, "email": user.email, "iat": now, "exp": now + self.ttl}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def read(self, token: str) -> CurrentUser | None:
        """The user a token names, or None when it is forged, expired, or not ours."""
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if now < known[1]:
                self._verified.move_to_end(token)
                return known[0]
            del self._verified[token]
        try:
            # Pinning the algorithm is what rejects "alg: none" and key-confusion tokens. Expiry
            # is checked below, on the same clock as remembered tokens.
            options = {"require": ["exp", "sub"], "verify_exp": False}
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options=options)  # type: ignore[arg-type]
        except jwt.PyJWTError:
            return None
        user_id, email, expires = claims.get("sub"), claims.get("email"), claims.get("exp")
        if not isinstance(user_id, str) or not isinstance(email, str) or not isinstance(expires, int | float):
            return None
        if expires <= now:
            return None
        user = CurrentUser(user_id, email)
        self._verified[token] = (user, float(expires))
        if len(self._verified) > self._remember:
            self._verified.popitem(last=False)
        return user


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


async def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: 401 unless the request carries a valid token. Runs before the body is read.

    Async on purpose, like every guard here: Litestar runs a sync guard in a worker thread.
    """
    if current_user(connection) is None:
        raise Unauthorized("Not authorized: sign in, or send a valid Bearer token")


async def provide_user(request: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser:
    """Dependency for routes behind :func:`require_user`."""
    user = current_user(request)
    if user is None:
        raise Unauthorized("Not authorized: sign in, or send a valid Bearer token")
    return user
