from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.common import auth
from app.common.auth import SESSION_COOKIE, Tokens
from app.common.body import StrictJSON
from app.common.openapi import OPTIONALLY_SIGNED_IN, errors
from app.common.throttle import ATTEMPT, client_of
from app.users import models, service
from app.users.schemas import Credentials, CurrentUser, SignedIn, User, UserCreate

# How the session cookie looks, for the document; the real one carries the token.
_SESSION_SET = Cookie(
    key=SESSION_COOKIE,
    value="<the token>",
    httponly=True,
    samesite="lax",
    path="/",
    documentation_only=True,
    description="The same token as the body's, for browsers",
)
# Cleared at sign-out: Litestar sends this with every answer of that route.
_SESSION_CLEARED = Cookie(key=SESSION_COOKIE, value="", path="/", max_age=0, description="Cleared")


def _signed_in(state: State, user: models.User, status_code: int) -> Response[SignedIn]:
    tokens: Tokens = state.tokens
    token = tokens.issue(auth.CurrentUser(user.id, user.email))
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=token,
        httponly=True,
        samesite="lax",
        path="/",
        max_age=int(tokens.ttl.total_seconds()),
    )
    return Response(SignedIn(user.id, user.email, token), status_code=status_code, cookies=[cookie])


class UserController(Controller):
    path = "/api/users"
    tags = ["users"]

    @post(
        "/signup",
        operation_id="signUp",
        dto=StrictJSON[UserCreate],
        return_dto=None,
        status_code=HTTP_201_CREATED,
        response_cookies=[_SESSION_SET],
        opt={ATTEMPT: True},
        responses=errors(
            400,
            409,
            429,
            body=True,
            says={400: ("email must be a valid email address", "email"), 409: ("Email in use", "email")},
        ),
    )
    async def sign_up(
        self, data: JSONBody[UserCreate], session: NamedDependency[AsyncSession], state: State
    ) -> Response[SignedIn]:
        """Create an account; the answer carries a token and sets it as the session cookie."""
        user = await service.sign_up(session, data.email, data.password)
        return _signed_in(state, user, HTTP_201_CREATED)

    @post(
        "/signin",
        operation_id="signIn",
        dto=StrictJSON[Credentials],
        return_dto=None,
        status_code=HTTP_200_OK,
        response_cookies=[_SESSION_SET],
        opt={ATTEMPT: True},
        responses=errors(
            400,
            401,
            429,
            body=True,
            says={
                400: ("password must be supplied", "password"),
                401: "Invalid credentials",
                429: "Too many failed sign-ins for this email: try again in 840 seconds",
            },
        ),
    )
    async def sign_in(
        self, data: JSONBody[Credentials], session: NamedDependency[AsyncSession], request: Request[Any, Any, Any]
    ) -> Response[SignedIn]:
        """A fresh token for an existing account, also set as the session cookie.

        Five failures for one email from one client within 15 minutes lock that pair out (429)
        until the first of them is 15 minutes old, the right password included.
        """
        user = await service.sign_in(session, data.email, data.password, client_of(request))
        return _signed_in(request.app.state, user, HTTP_200_OK)

    @post(
        "/signout",
        operation_id="signOut",
        status_code=HTTP_204_NO_CONTENT,
        response_cookies=[_SESSION_CLEARED],
    )
    async def sign_out(
        self, session: NamedDependency[AsyncSession], request: Request[Any, Any, Any], state: State
    ) -> None:
        """Revoke the token the request carries (Bearer or cookie) in every module, and clear the cookie."""
        signed = auth.current_token(request)
        if signed is None:
            return
        tokens: Tokens = state.tokens
        # Refused here at once; the other processes read it from their tables within a second.
        tokens.revoke(signed.token_id, signed.expires)
        expires_at = datetime.fromtimestamp(signed.expires, UTC)
        await service.sign_out(session, signed.token_id, signed.user.id, expires_at)

    @get("/currentuser", operation_id="currentUser", security=OPTIONALLY_SIGNED_IN)
    async def current_user(self, request: Request[Any, Any, Any]) -> CurrentUser:
        """Who the credentials name, or null."""
        user = auth.current_user(request)
        return CurrentUser(User(user.id, user.email) if user else None)
