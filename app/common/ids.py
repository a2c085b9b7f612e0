"""Record ids: UUID strings whose order is the order they were made in (UUIDv7, RFC 9562).

Lists page by id (``GET /api/tickets``), so an id that grows with time puts new records at the
end of the list, after every page a client has already read. Python 3.11's ``uuid`` has no
version 7, hence this module; any UUID string is still a valid id, older random ones included.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_RANDOM_BITS = 62
_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62


def _fresh(now_ns: int) -> int:
    """122 bits that grow with time: milliseconds (48), fraction of the millisecond (12), randomness (62)."""
    milliseconds, rest = divmod(now_ns, 1_000_000)
    # RFC 9562 §6.2, method 3: the 12 bits after the milliseconds hold a finer clock.
    fraction = rest * 4096 // 1_000_000
    randomness = int.from_bytes(os.urandom(8), "big") >> 2
    return ((milliseconds & (2**48 - 1)) << 12 | fraction) << _RANDOM_BITS | randomness


def _layout(counter: int) -> int:
    """The 122 bits placed around the version and variant fields of a UUID."""
    clock, randomness = counter >> _RANDOM_BITS, counter & ((1 << _RANDOM_BITS) - 1)
    return (clock >> 12) << 80 | _VERSION | (clock & 0xFFF) << 64 | _VARIANT | randomness


class _Rising:
    """Each value greater than the last: a clock that did not move on (or went back) counts on from there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def after(self, candidate: int) -> int:
        with self._lock:
            self._last = max(candidate, self._last + 1)
            return self._last


_rising = _Rising()


def uuid7() -> uuid.UUID:
    """A version 7 UUID, greater than any this process made before, even within one clock tick."""
    return uuid.UUID(int=_layout(_rising.after(_fresh(time.time_ns()))))


def new_id() -> str:
    return str(uuid7())
