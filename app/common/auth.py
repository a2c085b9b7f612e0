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
from app.common.ids import new_id

SESSION_COOKIE = "session"
_ALGORITHM = "HS256"
_USER_KEY = "ticketing.user"
# PyJWT would warn at every token about a short key; the app says it once, at start.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    email: str


@dataclass(frozen=True, slots=True)
class Signed:
    """What a valid token says: whose it is, its own id (``jti``), and when it expires (epoch seconds)."""

    user: CurrentUser
    token_id: str
    expires: float


class Tokens:
    """Issues and reads the app's JWTs (HS256, with expiry and an id of their own), and refuses revoked ones.

    A client sends the same token with every request, and checking it is a good part of a
    request's cost: tokens already verified are remembered (a bounded number) until they expire.
    Revoked ids are kept until their token would have expired anyway.
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
        self._verified: OrderedDict[str, Signed] = OrderedDict()
        self._remember = remember
        self._revoked: dict[str, float] = {}  # token id -> when its token expires
        self._revoked_limit = remember

    def issue(self, user: CurrentUser) -> str:
        now = utcnow()
        # The id tells apart two sign-ins of one account in the same second, so that one can be
        # signed out and not the other.
        claims = {"sub": user.id, "email": user.email, "jti": new_id(), "iat": now, "exp": now + self.ttl}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def read(self, token: str) -> CurrentUser | None:
        """The user a token names, or None when it is forged, expired, revoked, or not ours."""
        signed = self.verify(token)
        return signed.user if signed else None

    def verify(self, token: str) -> Signed | None:
        """What a token says, or None when it is forged, expired, revoked, or not ours."""
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if now < known.expires and known.token_id not in self._revoked:
                self._verified.move_to_end(token)
                return known
            del self._verified[token]
            return None
        try:
            # Pinning the algorithm is what rejects "alg: none" and key-confusion tokens. Expiry
            # is checked below, on the same clock as remembered tokens. A token without an id
            # could not be revoked, so it is not taken.
            options = {"require": ["exp", "sub", "jti"], "verify_exp": False}
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options=options)  # type: ignore[arg-type]
        except jwt.PyJWTError:
            return None
        user_id, email, expires, token_id = claims.get("sub"), claims.get("email"), claims.get("exp"), claims.get("jti")
        if not isinstance(user_id, str) or not isinstance(email, str) or not isinstance(token_id, str):
            return None
        if not isinstance(expires, int | float) or expires <= now or token_id in self._revoked:
            return None
        signed = Signed(CurrentUser(user_id, email), token_id, float(expires))
        self._verified[token] = signed
        if len(self._verified) > self._remember:
            self._verified.popitem(last=False)
        return signed

    def revoke(self, token_id: str, expires: float) -> None:
        """From now on the token with this id is refused, until it would have expired anyway."""
        if token_id in self._revoked:
            return
        self._revoked[token_id] = expires
        if len(self._revoked) > self._revoked_limit:
            # Expired ids refuse nothing that expiry does not: forget them, and let the limit grow
            # with what is really still in force.
            now = self._clock()
            self._revoked = {key: until for key, until in self._revoked.items() if until > now}
            self._revoked_limit = max(self._revoked_limit, 2 * len(self._revoked))


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    """The caller, read once per request from the bearer token, else from the session cookie."""
    signed = current_token(connection)
    return signed.user if signed else None


def current_token(connection: ASGIConnection[Any, Any, Any, Any]) -> Signed | None:
    """The valid token the request carries (the bearer token, else the session cookie), read once."""
    scope_state = connection.scope.setdefault("state", {})
    if _USER_KEY in scope_state:
        cached: Signed | None = scope_state[_USER_KEY]
        return cached
    tokens: Tokens = connection.app.state.tokens
    header = connection.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        signed = tokens.verify(credentials.strip())
    elif cookie := connection.cookies.get(SESSION_COOKIE):
        signed = tokens.verify(cookie)
    else:
        signed = None
    scope_state[_USER_KEY] = signed
    return signed


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
