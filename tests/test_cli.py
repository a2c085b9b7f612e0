"""``ticketing run`` as a real process: what a user types, and what they see."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from app.waiting import eventually
from tests.conftest import JWT_SECRET, Api
from tests.nats_server import NatsServer
from tests.processes import AppProcess

pytestmark = pytest.mark.slow


async def test_run_serves_health_logs_like_the_original_and_stops_cleanly(tmp_path: Path) -> None:
    app = await AppProcess({"TICKETING_JWT_SECRET": JWT_SECRET}, cwd=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as client:
            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json()["database"] == "SQLite ticketing.db"
            created = await client.post("/api/tickets", json={"title": "concert", "price": 20}, headers=Api.auth())
            assert created.status_code == 201
            await eventually(lambda: "[orders] Message received: ticket:created / orders-service" in app.lines)
    finally:
        code = await app.stop()
    # uvicorn finishes the shutdown, then re-raises SIGTERM so the exit reads as "terminated".
    assert code in {0, -signal.SIGTERM}, app.output()
    assert "Application shutdown complete." in app.lines
    for line in (
        "[tickets] Connected to in-memory bus",
        "[orders] Connected to in-memory bus",
        f"[tickets] Listening on port {app.port}",
        "[tickets] Event published to subject ticket:created",
    ):
        assert line in app.lines, app.output()
    # The default database is ticketing.db in the working directory, in WAL mode.
    with sqlite3.connect(tmp_path / "ticketing.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def run_and_fail(tmp_path: Path, env: dict[str, str]) -> tuple[int | None, bytes]:
    """``ticketing run`` with ``env`` (and nothing else from ours), expected to stop at once."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "run",
        cwd=tmp_path,
        env={**env, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output


async def test_run_refuses_bad_settings_with_a_clear_message(tmp_path: Path) -> None:
    code, output = await run_and_fail(tmp_path, {"TICKETING_MODULES": "tickets,payments"})
    assert code == 2
    assert b"unknown module(s) payments" in output


async def test_run_rejects_a_bad_port() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "run", "--port", "99999", stderr=asyncio.subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"99999 is not a TCP port" in errors


async def test_run_says_in_one_line_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    code, output = await run_and_fail(
        tmp_path, {"TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"}
    )
    assert code == 2
    assert b"ERROR: cannot reach the database SQLite" in output
    assert b"unable to open database file" in output
    assert b"Traceback" not in output


async def test_run_refuses_workers_on_the_in_memory_bus_in_one_line(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "run", "--workers", "2",
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "TICKETING_JWT_SECRET": JWT_SECRET},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert output.decode().splitlines() == [
        "ERROR: --workers 2 needs a bus the processes can share, such as TICKETING_BUS_URL=nats://HOST:PORT: "
        "the in-memory bus lives inside one process"
    ]


@pytest.mark.nats
async def test_run_with_workers_serves_from_several_processes_on_one_port(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    env = {"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_BUS_URL": f"{nats_server.url}?stream=WORKERS"}
    app = await AppProcess(env, cwd=tmp_path, args=["--workers", "2"]).start()
    try:
        await eventually(lambda: len(app.workers()) == 2, what="two workers")
        async with httpx.AsyncClient(base_url=app.url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            # Each stream is one worker's: enough of them reach both. Which worker accepts a new
            # connection is the kernel's choice, and it may favour one for a while: keep asking.
            pids: set[int] = set()

            async def both_answered() -> bool:
                async with client.stream("GET", "/demo/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            pids.add(json.loads(line[5:])["process"])
                            break
                return pids == set(app.workers())

            await eventually(both_answered, timeout=30, interval=0, what="streams from both workers")
            created = await client.post("/api/tickets", json={"title": "concert", "price": 20}, headers=Api.auth())
            assert created.status_code == 201
    finally:
        code = await app.stop()
    assert code in {0, -signal.SIGTERM}, app.output()
