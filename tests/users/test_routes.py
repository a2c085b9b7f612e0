"""Sign-up, sign-in, sign-out, the current user, and the tokens every module trusts."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from app.clock import utcnow
from app.users.models import User
from tests.conftest import JWT_SECRET, Api

PASSWORD = "correct horse"


async def signup(api: Api, email: str = "test@test.com", password: str = PASSWORD) -> dict[str, str]:
    response = await api.http.post("/api/users/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def test_signup_returns_201_the_user_a_token_and_a_session_cookie(api: Api) -> None:
    response = await api.http.post("/api/users/signup", json={"email": "Test@Test.com", "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "test@test.com"
    assert set(body) == {"id", "email", "token"}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@b", "password": PASSWORD}, "email"),
        ({"email": "test@test.com", "password": "short"}, "password"),
        ({"email": "test@test.com", "password": "x" * 129}, "password"),
        ({"email": "test@test.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        # Stored nowhere (PostgreSQL refuses NUL in text), so refused up front.
        ({"email": "te\x00st@test.com", "password": PASSWORD}, "email"),
        # Lower-cased, "İ" becomes two characters: the address as stored would not fit its column.
        ({"email": "İ" * 200 + "@test.com", "password": PASSWORD}, "email"),
    ],
)
async def test_signup_refuses_invalid_input_naming_the_field(api: Api, body: dict[str, str], field: str) -> None:
    response = await api.http.post("/api/users/signup", json=body)
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert "set-cookie" not in response.headers


async def test_signup_with_an_email_in_use_is_409(api: Api) -> None:
    await signup(api)
    response = await api.http.post("/api/users/signup", json={"email": "TEST@test.com", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"errors": [{"message": "Email in use", "field": "email"}]}


async def test_concurrent_signups_with_one_email_give_exactly_one_account(api: Api) -> None:
    responses = await asyncio.gather(
        *(api.http.post("/api/users/signup", json={"email": "race@test.com", "password": PASSWORD}) for _ in range(8))
    )
    assert sorted(response.status_code for response in responses) == [201] + [409] * 7


@pytest.mark.production_hashing
async def test_passwords_are_stored_only_as_argon2_hashes(api: Api) -> None:
    await signup(api)
    async with api.runtime.sessionmaker() as session:
        user = await session.scalar(select(User))
    assert user is not None
    # Argon2id with RFC 9106's low-memory profile: 64 MiB, 3 passes, 4 lanes.
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in user.password_hash
    signin = await api.http.post("/api/users/signin", json={"email": "test@test.com", "password": PASSWORD})
    assert signin.status_code == 200


async def test_signin_with_the_right_password_returns_a_token_and_cookie(api: Api) -> None:
    account = await signup(api)
    response = await api.http.post("/api/users/signin", json={"email": "test@test.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["id"] == account["id"]
    assert response.headers["set-cookie"].startswith("session=")


@pytest.mark.parametrize(
    "body",
    [{"email": "test@test.com", "password": "wrong password"}, {"email": "nobody@test.com", "password": PASSWORD}],
)
async def test_signin_with_wrong_credentials_is_401(api: Api, body: dict[str, str]) -> None:
    await signup(api)
    response = await api.http.post("/api/users/signin", json=body)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Invalid credentials"}]}
    assert "set-cookie" not in response.headers


async def test_signin_with_invalid_input_is_400(api: Api) -> None:
    response = await api.http.post("/api/users/signin", json={"email": "nope", "password": ""})
    assert response.status_code == 400
    assert {error["field"] for error in response.json()["errors"]} == {"email", "password"}


async def test_signin_with_a_nul_character_is_400_not_a_database_error(api: Api) -> None:
    response = await api.http.post("/api/users/signin", json={"email": "te\x00st@test.com", "password": PASSWORD})
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["email"]


async def test_currentuser_is_null_without_a_session(api: Api) -> None:
    response = await api.http.get("/api/users/currentuser")
    assert (response.status_code, response.json()) == (200, {"currentUser": None})


async def test_currentuser_reads_the_cookie_or_the_bearer_token(api: Api) -> None:
    account = await signup(api)
    expected = {"currentUser": {"id": account["id"], "email": "test@test.com"}}
    # The client keeps the session cookie set by signup.
    assert (await api.http.get("/api/users/currentuser")).json() == expected
    api.http.cookies.clear()
    bearer = {"Authorization": f"Bearer {account['token']}"}
    assert (await api.http.get("/api/users/currentuser", headers=bearer)).json() == expected


async def test_the_session_cookie_authenticates_other_modules(api: Api) -> None:
    await signup(api)
    response = await api.http.post("/api/tickets", json={"title": "concert", "price": 5})
    assert response.status_code == 201


async def test_signout_clears_the_session(api: Api) -> None:
    await signup(api)
    response = await api.http.post("/api/users/signout")
    assert response.status_code == 204
    assert "session=" in response.headers["set-cookie"]
    assert (await api.http.get("/api/users/currentuser")).json() == {"currentUser": None}


def _forge(claims: dict[str, object], header: dict[str, str]) -> str:
    def part(value: dict[str, object] | dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


@pytest.mark.parametrize("kind", ["wrong-secret", "expired", "alg-none", "no-expiry", "garbage"])
async def test_forged_expired_or_unsigned_tokens_are_401(api: Api, kind: str) -> None:
    now = utcnow()
    claims = {"sub": "someone", "email": "a@b.co", "iat": now, "exp": now + timedelta(hours=1)}
    if kind == "wrong-secret":
        token = jwt.encode(claims, "another-secret-of-decent-length!!", algorithm="HS256")
    elif kind == "expired":
        token = jwt.encode({**claims, "exp": now - timedelta(seconds=1)}, JWT_SECRET, algorithm="HS256")
    elif kind == "alg-none":
        expiry = int((now + timedelta(hours=1)).timestamp())
        token = _forge({"sub": "someone", "email": "a@b.co", "exp": expiry}, {"alg": "none", "typ": "JWT"})
    elif kind == "no-expiry":
        token = jwt.encode({"sub": "someone", "email": "a@b.co"}, JWT_SECRET, algorithm="HS256")
    else:
        token = "a.b.c"
    for headers, cookies in (({"Authorization": f"Bearer {token}"}, {}), ({}, {"session": token})):
        api.http.cookies.clear()
        api.http.cookies.update(cookies)
        response = await api.http.post("/api/tickets", json={"title": "t", "price": 1}, headers=headers)
        assert response.status_code == 401
        current = await api.http.get("/api/users/currentuser", headers=headers)
        assert current.json() == {"currentUser": None}
