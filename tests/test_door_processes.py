"""SPEC's "The door", as ``ticketing run`` shows it: what its log lines hold, and what it warns about."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.waiting import eventually
from tests.conftest import JWT_SECRET
from tests.processes import AppProcess

pytestmark = pytest.mark.slow

OPS_TOKEN = "ops-token-that-must-never-be-logged"
PASSWORD = "a password never logged"
OPEN_OPS = "/ops, /metrics and /demo/events are open"


async def test_no_token_or_password_reaches_the_log_access_log_included(tmp_path: Path) -> None:
    env = {"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_OPS_TOKEN": OPS_TOKEN}
    app = await AppProcess(env, cwd=tmp_path, args=["--access-log"]).start()
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            signed_up = await client.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
            token = signed_up.json()["token"]
            await client.get("/api/users/currentuser", headers={"Authorization": f"Bearer {token}"})
            # A client that puts its token where it should not: the URL.
            await client.get("/api/orders", params={"token": token})
            await client.get("/ops/bus", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
            # The live view as a browser opens it: the page, then its stream, the ops token in both URLs.
            await client.get("/demo", params={"token": OPS_TOKEN})
            async with client.stream("GET", "/demo/events", params={"token": OPS_TOKEN}) as stream:
                assert stream.status_code == 200
            await client.get("/demo/events", params={"token": "a-wrong-guess"})

        def logged(line: str) -> bool:
            return any(line in logged for logged in app.lines)

        # The access log is on, and has written the last request: the lines are there to read.
        def last_request_logged() -> bool:
            return any('"GET /demo/events?token=' in line and line.endswith(" 401") for line in app.lines)

        await eventually(last_request_logged, what="the access log line of the last request")
    finally:
        await app.stop()
    output = app.output()
    for secret in (OPS_TOKEN, token, PASSWORD, "a-wrong-guess"):
        assert secret not in output, f"{secret!r} is in the log:\n{output}"
    assert logged('"GET /demo?token=[redacted] HTTP/1.1" 200')
    assert logged('"GET /demo/events?token=[redacted] HTTP/1.1" 200')
    assert logged('"GET /api/orders?token=[redacted] HTTP/1.1"'), output


async def start_and_stop(tmp_path: Path, host: str, ops_token: str) -> str:
    env = {"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_OPS_TOKEN": ops_token}
    app = await AppProcess(env, cwd=tmp_path, args=["--host", host]).start()
    await app.stop()
    return app.output()


async def test_serving_open_ops_routes_beyond_loopback_warns_once_at_start(tmp_path: Path) -> None:
    folders = [tmp_path / name for name in ("open", "loopback", "guarded")]
    for folder in folders:
        folder.mkdir()
    exposed, loopback, guarded = await asyncio.gather(
        start_and_stop(folders[0], "0.0.0.0", ""),
        start_and_stop(folders[1], "127.0.0.1", ""),
        start_and_stop(folders[2], "0.0.0.0", OPS_TOKEN),
    )
    warnings = [line for line in exposed.splitlines() if OPEN_OPS in line]
    assert len(warnings) == 1, exposed
    assert warnings[0].startswith("WARNING: ") and "0.0.0.0" in warnings[0] and "set TICKETING_OPS_TOKEN" in warnings[0]
    assert OPEN_OPS not in loopback, "on loopback only this machine reaches them"
    assert OPEN_OPS not in guarded, "the token guards them"


async def test_behind_a_tls_proxy_the_origin_compared_is_the_https_one_the_browser_used(tmp_path: Path) -> None:
    # uvicorn believes X-Forwarded-Proto from loopback by default: the test is the proxy.
    app = await AppProcess({"TICKETING_JWT_SECRET": JWT_SECRET}, cwd=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            signed_up = await client.post("/api/users/signup", json={"email": "ada@example.com", "password": PASSWORD})
            client.cookies.clear()
            browser = {"Cookie": f"session={signed_up.json()['token']}", "Origin": f"https://127.0.0.1:{app.port}"}
            ticket = {"title": "concert", "price": 20}
            proxied = await client.post("/api/tickets", json=ticket, headers={**browser, "X-Forwarded-Proto": "https"})
            direct = await client.post("/api/tickets", json=ticket, headers=browser)
    finally:
        await app.stop()
    assert proxied.status_code == 201, proxied.text
    assert direct.status_code == 403 and "origin" in direct.json()["errors"][0]["message"], direct.text
