from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.bus import Bus, DeliveryPolicy
from app.bus.memory import MemoryBus
from tests.nats_server import NatsServer, nats_server, own_nats_server

__all__ = ["DURABLE_BACKENDS", "FAST", "Harness", "NatsHarness", "nats_server", "own_nats_server"]

# Fast retries so that redelivery and dead-letter tests take milliseconds.
FAST = DeliveryPolicy(max_deliver=4, backoff=0.01, backoff_max=0.05)


class Harness:
    """One broker per test; ``connect()`` opens another connection to it, as another process would."""

    name = "memory"
    # Whether a group's position survives its connection closing (a broker outside the process).
    durable_across_connections = False

    def __init__(self, policy: DeliveryPolicy) -> None:
        self.policy = policy
        self._bus: MemoryBus | None = None

    async def connect(self) -> Bus:
        # In memory the broker is the bus itself: every "connection" shares it.
        if self._bus is None:
            self._bus = MemoryBus(self.policy)
            await self._bus.connect()
        return self._bus

    async def aclose(self) -> None:
        if self._bus is not None:
            await self._bus.close()


class NatsHarness(Harness):
    """A stream of the test's own on the session's nats-server; each ``connect()`` is another process."""

    name = "nats"
    durable_across_connections = True

    def __init__(self, policy: DeliveryPolicy, server: NatsServer, **options: Any) -> None:
        super().__init__(policy)
        self.server = server
        # Streams never overlap: their subjects live under the stream's own (unique) name.
        self.stream = f"T{uuid.uuid4().hex[:12].upper()}"
        self.options = options
        self.buses: list[Bus] = []

    async def connect(self) -> Bus:
        from app.bus.nats import NatsBus, NatsOptions

        bus = NatsBus(NatsOptions.from_url(self.server.url, stream=self.stream, **self.options), self.policy)
        await bus.connect()
        self.buses.append(bus)
        return bus

    async def aclose(self) -> None:
        for bus in self.buses:
            await bus.close()
        await self.delete_streams()

    async def delete_streams(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        connection = await nats.connect(self.server.url)
        try:
            js = connection.jetstream()
            for name in (self.stream, f"{self.stream}_DEAD"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(name)
        finally:
            await connection.close()


BACKENDS = ["memory", pytest.param("nats", marks=pytest.mark.nats)]
# Backends whose groups outlive a connection: a broker outside the process.
DURABLE_BACKENDS = [pytest.param("nats", marks=pytest.mark.nats)]


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    # ``@pytest.mark.policy(policy, memory=policy_in_memory, **nats_options)`` gives a test its own
    # delivery policy; ``memory``, when the in-memory bus can do with shorter waits than NATS.
    marker = request.node.get_closest_marker("policy")
    policy, options = (marker.args[0], dict(marker.kwargs)) if marker else (FAST, {})
    in_memory = options.pop("memory", policy)
    # The NATS server starts with the first test that needs it, so memory-only runs need none.
    if request.param == "nats":
        harness: Harness = NatsHarness(policy, request.getfixturevalue("nats_server"), **options)
    else:
        harness = Harness(in_memory)
    yield harness
    await harness.aclose()


@pytest.fixture
async def bus(harness: Harness) -> Bus:
    return await harness.connect()
