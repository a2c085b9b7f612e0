from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.bus import Bus, DeliveryPolicy
from app.bus.memory import MemoryBus

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


BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = Harness(FAST)
    yield harness
    await harness.aclose()


@pytest.fixture
async def bus(harness: Harness) -> Bus:
    return await harness.connect()
