"""Dead letters as an operator meets them: kept across a SIGKILL, listed and replayed by ``ticketing dead-letters``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import JWT_SECRET, Api
from tests.faults.load import Shop, settle
from tests.processes import AppProcess

pytestmark = pytest.mark.slow

OPS_TOKEN = "ops-token-for-the-tests"
# Every event up to 2 s late, and an early one gives up after half a second: some die of waiting.
IMPATIENT_CHAOS = "memory://?chaos=5&chaos_delay=2&chaos_duplicates=0&max_wait=0.5&backoff=0.05&backoff_max=0.2"


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "dead-letters", *args,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def dead_letters(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/ops/dead-letters")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_dead_letters_survive_a_sigkill_and_one_command_replays_them_into_place(tmp_path: Path) -> None:
    env = {
        "TICKETING_JWT_SECRET": JWT_SECRET,
        "TICKETING_OPS_TOKEN": OPS_TOKEN,
        "TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
    }
    app = AppProcess({**env, "TICKETING_BUS_URL": IMPATIENT_CHAOS}, cwd=tmp_path)
    await app.start()
    owner, ops = Api.auth(), {"Authorization": f"Bearer {OPS_TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=app.url, headers=ops) as client:
            ticket = (await client.post("/api/tickets", json={"title": "concert", "price": 20}, headers=owner)).json()
            for price in range(21, 27):
                edited = await client.put(
                    f"/api/tickets/{ticket['id']}", json={"title": "gig", "price": price}, headers=owner
                )
                assert edited.status_code == 200
            await settle(Shop(app.url, token=OPS_TOKEN))
            before = await dead_letters(client)
            assert before, "the chaos was meant to make some events wait too long"
            assert all("waited" in dead["error"] for dead in before)
    finally:
        await app.kill()

    # Restarted, calm: what was dead before the kill is still there, and nothing else is.
    app.env["TICKETING_BUS_URL"] = "memory://"
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=app.url, headers=ops) as client:
            assert {dead["id"] for dead in await dead_letters(client)} == {dead["id"] for dead in before}

            code, out, _ = await cli("--url", app.url, env={"TICKETING_OPS_TOKEN": OPS_TOKEN})
            assert code == 0
            assert f"{len(before)} dead letter(s) at {app.url}" in out
            assert all(dead["id"] in out for dead in before)

            code, out, _ = await cli("replay", "--all", "--url", app.url, "--ops-token", OPS_TOKEN)
            assert code == 0, out
            assert f"Replayed {len(before)} dead letter(s)." in out

            await settle(Shop(app.url, token=OPS_TOKEN))
            assert await dead_letters(client) == []
            # The orders module's copy caught up with every edit: an order shows it.
            current = (await client.get(f"/api/tickets/{ticket['id']}")).json()
            order = await client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=Api.auth())
            assert order.status_code == 201, order.text
            copy = order.json()["ticket"]
            assert (copy["title"], copy["price"], copy["version"]) == ("gig", 26.0, current["version"])
    finally:
        await app.stop()


async def test_the_dead_letters_command_says_clearly_what_went_wrong(tmp_path: Path) -> None:
    code, _, err = await cli("--url", "http://127.0.0.1:9")
    assert code == 2
    assert err.startswith("ERROR: cannot reach the app at http://127.0.0.1:9")

    app = AppProcess({"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_OPS_TOKEN": OPS_TOKEN}, cwd=tmp_path)
    await app.start()
    try:
        code, _, err = await cli("--url", app.url, "--ops-token", "wrong")
        assert code == 2
        assert "refused the ops token (401)" in err and "TICKETING_OPS_TOKEN" in err

        code, out, _ = await cli("--url", app.url, "--json", env={"TICKETING_OPS_TOKEN": OPS_TOKEN})
        assert (code, out.strip()) == (0, "[]")

        code, _, err = await cli("replay", "6f1c1f3e-0000-4000-8000-000000000000", "--url", app.url,
                                 env={"TICKETING_OPS_TOKEN": OPS_TOKEN})  # fmt: skip
        assert code == 1
        assert "no dead letter 6f1c1f3e-0000-4000-8000-000000000000" in err
    finally:
        await app.stop()
