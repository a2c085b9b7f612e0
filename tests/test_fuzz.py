"""schemathesis against a real ``ticketing run``: every operation, every phase, three callers.

It reads the served ``/schema/openapi.json`` and sends valid and invalid data to every operation,
then chains calls along the document's links (create a ticket, show it, edit it with its ETag,
order it, show and cancel the order). The callers take turns (tests/fuzz_hooks.py): the owner by
Bearer token and by cookie, another user, and nobody. Every check schemathesis has must pass (no
5xx, only documented statuses, bodies and headers as documented, invalid data refused, valid data
accepted, credentials enforced), and two of SPEC's: its error body on every 4xx, and owners only.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import AppProcess

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).with_name("schemathesis.toml")
# The same cases every run; a failure prints the curl command that reproduces it.
SEED = "20260601"
TIMEOUT = 150.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def sign_up(url: str, email: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/users/signup", json={"email": email, "password": "fuzzing password"})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["token"]


async def schemathesis(url: str, env: dict[str, str], reports: Path) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/schema/openapi.json",
        "--seed",
        SEED,
        "--report",
        "junit",
        "--report-dir",
        str(reports),
    ]
    # Run elsewhere, so that hypothesis's working files stay out of the repository; the hooks
    # module (tests.fuzz_hooks) is found through PYTHONPATH.
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    process = await asyncio.create_subprocess_exec(
        *command, cwd=reports.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis took longer than {TIMEOUT}s") from None
    return process.returncode or 0, output.decode(errors="replace")


async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    ops_token = "fuzzing-ops-token"
    app_env = {
        "TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ticketing.db'}",
        "TICKETING_JWT_SECRET": "fuzzing-secret-of-decent-length!",
        "TICKETING_OPS_TOKEN": ops_token,
        # Sign-ups and sign-ins are hundreds here: no per-client limit for this run.
        "TICKETING_AUTH_RATE": "0",
    }
    app = AppProcess(app_env, cwd=tmp_path)
    await app.start()
    try:
        owner_id, owner_token = await sign_up(app.url, "owner@example.com")
        other_id, other_token = await sign_up(app.url, "other@example.com")
        env = {
            **os.environ,
            "FUZZ_OWNER_ID": owner_id,
            "FUZZ_OWNER_TOKEN": owner_token,
            "FUZZ_OTHER_ID": other_id,
            "FUZZ_OTHER_TOKEN": other_token,
            "FUZZ_OPS_TOKEN": ops_token,
        }
        code, output = await schemathesis(app.url, env, tmp_path / "reports")
    finally:
        await app.stop()
    print(output)
    assert code == 0, output
    assert "Traceback" not in app.output(), app.output()
