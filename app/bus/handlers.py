"""What a subscriber hands the bus, and what its handler may raise."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeGuard, runtime_checkable

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


# isinstance() against a runtime-checkable Protocol inspects the object's attributes each time
# (microseconds, on every delivery): what a handler can do is worked out once per handler.
_abilities: weakref.WeakKeyDictionary[object, tuple[bool, bool]] = weakref.WeakKeyDictionary()


def _abilities_of(handler: Handler) -> tuple[bool, bool]:
    try:
        return _abilities[handler]
    except KeyError:
        found = _abilities[handler] = (isinstance(handler, KeyedHandler), isinstance(handler, BatchHandler))
        return found
    except TypeError:  # not weakly referable: asked each time
        return isinstance(handler, KeyedHandler), isinstance(handler, BatchHandler)


def is_keyed(handler: Handler) -> TypeGuard[KeyedHandler]:
    """Whether the handler says which record a delivery is about."""
    return _abilities_of(handler)[0]


def takes_batches(handler: Handler) -> TypeGuard[BatchHandler]:
    """Whether the handler can take several deliveries as one unit of work."""
    return _abilities_of(handler)[1]


class Retry(Exception):
    """Raised by a handler for a delivery that came too early (or lost a race): not a failure.

    It comes again once a delivery about the same record has been applied, or after its
    backoff; it is dead-lettered only when it has waited ``max_wait`` seconds in all.
    """


class Unprocessable(Exception):
    """Raised by a handler for a message no retry can help (it cannot be decoded): dead-letter it now."""
