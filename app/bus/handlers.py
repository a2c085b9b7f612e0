"""What a subscriber hands the bus, and what its handler may raise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from app.bus.messages import Delivery, Outcome

Handler = Callable[[Delivery], Awaitable[Outcome | None]]


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that can also take several deliveries at once, as one unit of work.

    ``batch`` either handles them all (returning one outcome each, in order) or raises; when
    it raises, nothing of it may have taken effect, and the bus hands the deliveries to
    ``__call__`` one by one, with the usual retry rules. Batching is an optimisation only.
    """

    async def __call__(self, delivery: Delivery) -> Outcome | None: ...

    async def batch(self, deliveries: Sequence[Delivery]) -> Sequence[Outcome]: ...


@runtime_checkable
class KeyedHandler(Protocol):
    """A handler that can say which record a delivery is about (its ``key``).

    A delivery refused as early waits, parked, until a delivery about the same record is
    applied in its group, rather than only for its backoff to run out.
    """

    async def __call__(self, delivery: Delivery) -> Outcome | None: ...

    def key(self, delivery: Delivery) -> str | None: ...


class Retry(Exception):
    """Raised by a handler for a delivery that came too early (or lost a race): not a failure.

    It comes again once a delivery about the same record has been applied, or after its
    backoff; it is dead-lettered only when it has waited ``max_wait`` seconds in all.
    """


class Unprocessable(Exception):
    """Raised by a handler for a message no retry can help (it cannot be decoded): dead-letter it now."""
