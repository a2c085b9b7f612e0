"""SPEC, "The door.": sign-out revokes, failures lock a pair out, each client has an attempt rate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.runtime import Runtime
from app.users import service
from tests.conftest import DEPLOYMENTS, JWT_SECRET, Api
from tests.deployments import make_settings
from tests.processes import AppProcess

PASSWORD = "correct horse"
WRONG = "wrong horse battery"


async def signup(api: Api, email: str = "ada@example.com") -> str:
    response = await api.http.post("/api/users/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def who(http: httpx.AsyncClient, token: str) -> int:
    """What a route behind sign-in answers the token: 200 while it works, 401 once it is refused."""
    return (await http.get("/api/orders", headers=bearer(token))).status_code


@pytest.mark.parametrize("deployment", DEPLOYMENTS, indirect=True)
async def test_a_signed_out_token_is_refused_by_every_process_within_a_second(api: Api) -> None:
    token = await signup(api)
    # /api/orders is served by the orders process when the modules are split (tests/deployments.py).
    assert await who(api.http, token) == 200
    assert (await api.http.post("/api/users/signout", headers=bearer(token))).status_code == 204
    signed_out = time.monotonic()
    while await who(api.http, token) != 401:
        assert time.monotonic() - signed_out < 1.0, "the signed-out token still works after a second"
        await asyncio.sleep(0.02)
    current = await api.http.get("/api/users/currentuser", headers=bearer(token))
    assert current.json() == {"currentUser": None}


async def test_two_sign_ins_in_one_second_get_tokens_that_are_signed_out_apart(api: Api) -> None:
    await signup(api)
    credentials = {"email": "ada@example.com", "password": PASSWORD}
    first, second = [(await api.http.post("/api/users/signin", json=credentials)).json()["token"] for _ in range(2)]
    assert first != second
    assert (await api.http.post("/api/users/signout", headers=bearer(first))).status_code == 204
    assert (await who(api.http, first), await who(api.http, second)) == (401, 200)


async def test_signing_out_by_cookie_revokes_the_cookies_token(api: Api) -> None:
    response = await api.http.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
    token = response.json()["token"]
    assert api.http.cookies.get("session") == token
    assert (await api.http.post("/api/users/signout")).status_code == 204
    assert await who(api.http, token) == 401


async def test_signing_out_without_a_token_changes_nothing(api: Api) -> None:
    token = await signup(api)
    api.http.cookies.clear()
    assert (await api.http.post("/api/users/signout")).status_code == 204
    assert await who(api.http, token) == 200


@asynccontextmanager
async def two_clients(database_url: str, per_minute: int = 30) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """One app, and two callers from two addresses."""
    settings = make_settings(database_url, "memory://")
    settings = replace(settings, auth=replace(settings.auth, attempts_per_minute=per_minute))
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    await runtime.start()
    try:
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(address, 40000)),  # type: ignore[arg-type]
                base_url="http://testserver",
            )
            for address in ("192.0.2.1", "192.0.2.2")
        ]
        yield tuple(clients)
        for client in clients:
            await client.aclose()
    finally:
        await runtime.stop()


async def sign_in(http: httpx.AsyncClient, password: str, email: str = "ada@example.com") -> httpx.Response:
    return await http.post("/api/users/signin", json={"email": email, "password": password})


async def test_five_failures_lock_one_email_and_one_client_out_even_with_the_right_password(
    database_url: str,
) -> None:
    async with two_clients(database_url) as (attacker, owner):
        assert (
            await owner.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
        ).is_success
        assert [(await sign_in(attacker, WRONG)).status_code for _ in range(5)] == [401] * 5
        locked = await sign_in(attacker, PASSWORD)
        assert locked.status_code == 429
        retry_after = int(locked.headers["retry-after"])
        assert 14 * 60 < retry_after <= 15 * 60
        assert locked.json() == {
            "errors": [{"message": f"Too many failed sign-ins for this email: try again in {retry_after} seconds"}]
        }
        assert "set-cookie" not in locked.headers
        # The owner, from another client, and another email from the attacker's, are not locked out.
        assert (await sign_in(owner, PASSWORD)).status_code == 200
        assert (await sign_in(attacker, WRONG, email="bob@example.com")).status_code == 401


async def test_a_success_clears_the_failures_before_it(database_url: str) -> None:
    async with two_clients(database_url) as (client, _):
        await client.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
        for _ in range(2):
            assert [(await sign_in(client, WRONG)).status_code for _ in range(4)] == [401] * 4
            assert (await sign_in(client, PASSWORD)).status_code == 200


async def test_many_guesses_at_once_get_no_more_hashes_than_the_window_allows(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    verify = service._verify

    async def counting(password_hash: str, password: str) -> bool:
        nonlocal checked
        checked += 1
        return await verify(password_hash, password)

    monkeypatch.setattr(service, "_verify", counting)
    async with two_clients(database_url, per_minute=0) as (client, _):
        answers = await asyncio.gather(*(sign_in(client, WRONG) for _ in range(40)))
    assert sorted(answer.status_code for answer in answers) == [401] * 5 + [429] * 35
    assert checked == 5


@pytest.mark.slow
async def test_a_lockout_and_a_revocation_outlive_a_restart(tmp_path: Path) -> None:
    env = {"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}"}
    app = await AppProcess(env, cwd=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as http:
            signed_up = await http.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
            token = signed_up.json()["token"]
            assert (await http.post("/api/users/signout", headers=bearer(token))).status_code == 204
            assert [(await sign_in(http, WRONG)).status_code for _ in range(5)] == [401] * 5
    finally:
        await app.stop()
    again = await AppProcess(env, cwd=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=again.url) as http:
            assert (await sign_in(http, PASSWORD)).status_code == 429, "the failures were forgotten"
            assert await who(http, token) == 401, "the revocation was forgotten"
    finally:
        await again.stop()


async def test_one_client_gets_the_attempt_rate_then_429_with_retry_after(database_url: str) -> None:
    async with two_clients(database_url, per_minute=3) as (eager, other):
        statuses = [(await sign_in(eager, WRONG, email=f"u{n}@example.com")).status_code for n in range(3)]
        refused = await eager.post("/api/users/signup", json={"email": "new@example.com", "password": PASSWORD})
        assert (statuses, refused.status_code) == ([401] * 3, 429)
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert refused.json() == {
            "errors": [
                {
                    "message": "Too many sign-up and sign-in attempts from this client: "
                    f"try again in {retry_after} seconds"
                }
            ]
        }
        # Another client has attempts of its own, and the rate counts only sign-up and sign-in.
        assert (await sign_in(other, WRONG)).status_code == 401
        assert (await eager.get("/api/tickets")).status_code == 200


async def test_an_attempt_rate_of_zero_lifts_the_limit(database_url: str) -> None:
    async with two_clients(database_url, per_minute=0) as (client, _):
        statuses = {(await sign_in(client, WRONG, email=f"u{n}@example.com")).status_code for n in range(40)}
    assert statuses == {401}


def health_waits(url: str, done: threading.Event) -> list[float]:
    """How long each /health took, asked over and over until ``done``; each must be a 200."""
    waits = []
    with httpx.Client(base_url=url, timeout=5) as http:
        while not done.is_set():
            started = time.monotonic()
            assert http.get("/health").status_code == 200
            waits.append(time.monotonic() - started)
            done.wait(0.05)
    return waits


def peak_and_current_rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


@pytest.mark.slow
async def test_a_flood_of_sign_ins_costs_time_not_memory_and_health_keeps_answering(tmp_path: Path) -> None:
    # The per-client rate is lifted, so that the flood reaches the hashing; four accounts, so
    # that the failure window lets a score of those guesses through to a hash.
    env = {
        "TICKETING_JWT_SECRET": JWT_SECRET,
        "TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        "TICKETING_AUTH_RATE": "0",
    }
    app = await AppProcess(env, cwd=tmp_path).start()
    assert app.process is not None
    try:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=app.url, timeout=120, limits=limits) as http:
            _, idle = peak_and_current_rss_mib(app.process.pid)
            emails = [f"user{n}@example.com" for n in range(4)]
            flood = asyncio.gather(*(sign_in(http, WRONG, email=emails[n % 4]) for n in range(200)))
            # /health is asked from a thread of its own: the flood's client, on this event loop,
            # must not be what keeps it waiting.
            done = threading.Event()
            probe = asyncio.create_task(asyncio.to_thread(health_waits, app.url, done))
            try:
                answers = await flood
            finally:
                done.set()
            waits = await probe
            peak, _ = peak_and_current_rss_mib(app.process.pid)
    finally:
        await app.stop()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 20 + [429] * 180, statuses
    assert max(waits) < 1.0, f"/health took {max(waits):.2f} s during the flood"
    assert peak - idle < 100, f"peak RSS {peak:.0f} MiB against {idle:.0f} MiB idle"
    print(f"\nflood of 200 sign-ins: peak RSS +{peak - idle:.0f} MiB over idle, /health at most {max(waits):.3f} s")
