from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.auth import SESSION_COOKIE, CurrentUser, Tokens, current_user
from app.common.body import StrictJSON
from app.users import service
from app.users.models import User
from app.users.schemas import Credentials, CurrentUserView, SignedIn, SignInCredentials, UserView


def _signed_in(state: State, user: User, status_code: int) -> Response[SignedIn]:
    tokens: Tokens = state.tokens
    token = tokens.issue(CurrentUser(user.id, user.email))
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

    @post("/signup", dto=StrictJSON[Credentials], return_dto=None, status_code=HTTP_201_CREATED)
    async def sign_up(
        self, data: JSONBody[Credentials], session: NamedDependency[AsyncSession], state: State
    ) -> Response[SignedIn]:
        user = await service.sign_up(session, data.normalized_email, data.password)
        return _signed_in(state, user, HTTP_201_CREATED)

    @post("/signin", dto=StrictJSON[SignInCredentials], return_dto=None, status_code=HTTP_200_OK)
    async def sign_in(
        self, data: JSONBody[SignInCredentials], session: NamedDependency[AsyncSession], state: State
    ) -> Response[SignedIn]:
        user = await service.sign_in(session, data.normalized_email, data.password)
        return _signed_in(state, user, HTTP_200_OK)

    @post("/signout", status_code=HTTP_204_NO_CONTENT)
    async def sign_out(self) -> Response[None]:
        response = Response(None, status_code=HTTP_204_NO_CONTENT)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @get("/currentuser")
    async def current_user(self, request: Request[Any, Any, Any]) -> CurrentUserView:
        user = current_user(request)
        return CurrentUserView(UserView(user.id, user.email) if user else None)
