"""A client generated from the served ``/schema/openapi.json`` drives SPEC's walkthrough.

openapi-python-client (pinned in the test extra; its dependencies sit beside ours) writes a
package from the document of a real ``ticketing run``; the test imports it and uses nothing else
to talk to the app: sign up, create a ticket, edit it, order it, see it reserved, cancel, edit
again, and be refused with 412 for an edit based on a version that is gone.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest

from app.waiting import eventually
from tests.processes import AppProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
PACKAGE = "ticketing_client"


async def generate(document_url: str, where: Path) -> None:
    # The generator formats its output with ruff, which it looks for on PATH.
    tools = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = await asyncio.create_subprocess_exec(
        str(Path(tools) / "openapi-python-client"),
        "generate",
        "--url",
        document_url,
        "--meta",
        "none",
        "--fail-on-warning",
        cwd=where,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` on sys.path for the test, and the generated package forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def client_module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_client_generated_from_the_document_walks_through_the_spec(importable: Path) -> None:
    app = AppProcess({"TICKETING_DATABASE_URL": f"sqlite+aiosqlite:///{importable / 'ticketing.db'}"}, cwd=importable)
    await app.start()
    try:
        await generate(f"{app.url}/schema/openapi.json", importable)
        await walk_through(app.url)
    finally:
        await app.stop()


async def walk_through(url: str) -> None:
    package = importlib.import_module(PACKAGE)
    models = client_module("models")
    sign_up = client_module("api.users.sign_up")
    create_ticket, update_ticket = (
        client_module("api.tickets.create_ticket"),
        client_module("api.tickets.update_ticket"),
    )
    show_ticket = client_module("api.tickets.show_ticket")
    create_order, cancel_order = client_module("api.orders.create_order"), client_module("api.orders.cancel_order")

    anonymous = package.Client(base_url=url)
    signed = await sign_up.asyncio(
        client=anonymous, body=models.UserCreate(email="ada@example.com", password="correct horse")
    )
    assert isinstance(signed, models.SignedIn) and signed.email == "ada@example.com"
    ada = package.AuthenticatedClient(base_url=url, token=signed.token)

    ticket = await create_ticket.asyncio(client=ada, body=models.TicketCreate(title="concert", price=20))
    assert (ticket.title, ticket.price, ticket.version, ticket.order_id) == ("concert", 20, 0, None)
    ticket_id = UUID(str(ticket.id))

    edited = await update_ticket.asyncio_detailed(
        ticket_id, client=ada, body=models.TicketUpdate(title="concert", price=25)
    )
    assert (edited.status_code, edited.headers["etag"], edited.parsed.version) == (200, '"1"', 1)

    async def ordered() -> Any:
        # The orders module learns of the ticket through the bus: until then it answers 404.
        answer = await create_order.asyncio_detailed(client=ada, body=models.OrderCreate(ticket_id=ticket_id))
        assert answer.status_code in {201, 404}, answer.content
        return answer.parsed if answer.status_code == 201 else None

    order = await eventually(ordered, timeout=15, interval=0.05, what="the orders module to know the ticket")
    assert isinstance(order, models.Order), order
    # The order shows the orders module's copy of the ticket, as far as the events have brought it.
    assert (order.status, str(order.ticket.id)) == (models.OrderStatus.CREATED, str(ticket_id))

    async def reserved() -> Any:
        shown = await show_ticket.asyncio(ticket_id, client=anonymous)
        return shown if shown.order_id == str(order.id) else None

    await eventually(reserved, timeout=15, what="the ticket reserved by the order")
    refused = await update_ticket.asyncio_detailed(
        ticket_id, client=ada, body=models.TicketUpdate(title="concert", price=30)
    )
    assert refused.status_code == 409
    assert refused.parsed.errors[0].message == "Cannot edit a reserved ticket"

    cancelled = await cancel_order.asyncio_detailed(UUID(str(order.id)), client=ada)
    assert (cancelled.status_code, cancelled.content) == (204, b"")

    async def released() -> Any:
        shown = await show_ticket.asyncio(ticket_id, client=anonymous)
        return shown if shown.order_id is None else None

    free = await eventually(released, timeout=15, what="the ticket released by the cancellation")
    again = await update_ticket.asyncio_detailed(
        ticket_id, client=ada, body=models.TicketUpdate(title="concert", price=30), if_match=f'"{free.version}"'
    )
    assert (again.status_code, again.parsed.price, again.parsed.version) == (200, 30, free.version + 1)

    stale = await update_ticket.asyncio_detailed(
        ticket_id, client=ada, body=models.TicketUpdate(title="concert", price=35), if_match='"1"'
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.ErrorBody)
    assert stale.parsed.errors[0].message == f'If-Match "1" does not match the current version "{again.parsed.version}"'
