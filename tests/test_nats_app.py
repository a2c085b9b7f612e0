"""The whole app over NATS JetStream, against a server of the test's own that it stops and starts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from app.orders.models import TicketReplica
from app.waiting import eventually
from tests.conftest import Api, AppFactory
from tests.deployments import nats_bus_url
from tests.nats_server import NatsServer

pytestmark = pytest.mark.nats


@pytest.fixture
async def api_on_own_server(start_app: AppFactory, own_nats_server: NatsServer) -> AsyncIterator[Api]:
    async with start_app(bus_url=nats_bus_url(own_nats_server.url)) as api:
        yield api


async def test_the_app_says_it_is_connected_to_nats(
    start_app: AppFactory, own_nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ticketing"):
        async with start_app(bus_url=nats_bus_url(own_nats_server.url)) as api:
            health = (await api.http.get("/health")).json()
    messages = [record.getMessage() for record in caplog.records]
    for module in ("users", "tickets", "orders"):
        assert f"[{module}] Connected to NATS" in messages
    assert health["bus"].startswith(f"NATS {own_nats_server.url}")
    assert health["busOk"] is True


async def test_health_is_503_while_nats_is_down_and_200_once_it_is_back(
    api_on_own_server: Api, own_nats_server: NatsServer
) -> None:
    api = api_on_own_server
    assert (await api.http.get("/health")).status_code == 200
    own_nats_server.stop()
    down = await eventually(lambda: _status(api, 503), what="/health to notice the outage")
    assert down is not None
    assert down["busOk"] is False
    assert down["databaseOk"] is True
    own_nats_server.start()
    await eventually(lambda: _status(api, 200), timeout=30, what="/health after the server came back")


async def _status(api: Api, code: int) -> dict[str, object] | None:
    response = await api.http.get("/health")
    body: dict[str, object] = response.json()
    return body if response.status_code == code else None


async def test_events_committed_while_nats_is_down_are_delivered_when_it_returns(
    api_on_own_server: Api, own_nats_server: NatsServer
) -> None:
    api = api_on_own_server
    owner = api.auth()
    own_nats_server.stop()
    await eventually(lambda: _status(api, 503), what="the outage to be noticed")
    # The write itself does not need the broker: it commits, with its event in the outbox.
    tickets = [await api.create_ticket(owner, title=f"during outage {n}") for n in range(3)]
    assert (await api.counters())["pending"] >= 3
    own_nats_server.start()
    await api.settled(timeout=60)
    async with api.sessions("orders")() as session:
        copies = {replica.id for replica in (await session.scalars(select(TicketReplica))).all()}
    assert copies == {ticket["id"] for ticket in tickets}
