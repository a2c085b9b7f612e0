"""The AsyncAPI document against JetStream itself: where the events are, and how a stranger reads them.

A plain nats-py subscriber finds each event on the subject the document names, with the headers
it names; and the README's Node snippet (the official ``nats`` npm client) reads the orders as a
queue group of its own, as a service in another language would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import nats
import pytest

from app.asyncapi import document, stream_of
from tests.conftest import Api, AppFactory
from tests.deployments import nats_bus_url
from tests.nats_server import NatsServer

pytestmark = pytest.mark.nats
ROOT = Path(__file__).resolve().parent.parent
NATS_NPM = "nats@2.29.3"


@pytest.fixture
async def api_on_nats(start_app: AppFactory, nats_server: NatsServer) -> AsyncIterator[Api]:
    async with start_app(bus_url=nats_bus_url(nats_server.url)) as api:
        yield api


def _channel(doc: dict[str, Any], subject: str) -> dict[str, Any]:
    return next(channel for channel in doc["channels"].values() if channel["title"] == subject)


def _message(doc: dict[str, Any], subject: str) -> dict[str, Any]:
    return next(message for message in doc["components"]["messages"].values() if message["name"] == subject)


async def test_each_event_is_on_the_documented_subject_with_the_documented_headers(
    api_on_nats: Api, nats_server: NatsServer
) -> None:
    api = api_on_nats
    doc = (await api.http.get("/schema/asyncapi.json")).json()
    channel = _channel(doc, "ticket:created")
    connection = await nats.connect(nats_server.url)
    try:
        subscription = await connection.jetstream().subscribe(channel["address"], ordered_consumer=True)
        ticket = await api.create_ticket(api.auth())
        received = await subscription.next_msg(timeout=10)
    finally:
        await connection.close()
    assert received.subject == channel["address"]
    envelope = doc["components"]["schemas"]["Envelope"]
    headers = received.headers or {}
    assert set(envelope["required"]) <= set(headers) <= set(envelope["properties"])
    assert headers["Ticketing-Source"] == "tickets"
    payload = json.loads(received.data)
    assert payload["id"] == ticket["id"]
    schema = {**_message(doc, "ticket:created")["payload"], "components": doc["components"]}
    jsonschema.validate(payload, schema)
    jsonschema.validate(dict(headers), {**envelope, "components": doc["components"]})


def readme_snippet() -> str:
    snippets: list[str] = re.findall(r"```js\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(snippets) == 1, "the README has one Node snippet, the one this test runs"
    return snippets[0]


def _node_or_skip() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm on PATH to run the README's Node snippet")
    return node, npm


@pytest.fixture(scope="session")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the README's snippet and the official nats client installed beside it."""
    _, npm = _node_or_skip()
    where = tmp_path_factory.mktemp("payments")
    (where / "payments.mjs").write_text(readme_snippet())
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", NATS_NPM],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, f"npm install {NATS_NPM} failed:\n{install.stdout}{install.stderr}"
    return where


@pytest.mark.slow
async def test_the_readmes_node_service_reads_the_orders(
    api_on_nats: Api, nats_server: NatsServer, node_project: Path
) -> None:
    api = api_on_nats
    node, _ = _node_or_skip()
    stream = stream_of(api.runtime.settings.bus.url)
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    order = await api.order(api.auth(), ticket["id"])
    payments = await asyncio.create_subprocess_exec(
        node,
        "payments.mjs",
        cwd=node_project,
        env={"NATS_URL": nats_server.url.removeprefix("nats://"), "STREAM": stream, "PATH": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        line = await asyncio.wait_for(_first_line(payments), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            payments.terminate()
        await payments.wait()
    printed = json.loads(line)
    doc = document(api.runtime.settings.bus.url)
    assert printed["subject"] == _channel(doc, "order:created")["address"]
    assert printed["eventId"]
    assert {key: printed["order"][key] for key in ("id", "status", "userId")} == {
        "id": order["id"],
        "status": "created",
        "userId": order["userId"],
    }
    assert printed["order"]["ticket"]["id"] == ticket["id"]


async def _first_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    raw = await process.stdout.readline()
    if not raw.strip().startswith(b"{"):
        rest = await process.stdout.read()
        raise AssertionError(f"the Node service said: {(raw + rest).decode(errors='replace')}")
    return raw.decode()
