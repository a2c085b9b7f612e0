"""Where early deliveries wait: until their record moves on in their group, or their backoff runs out.

A delivery refused because its predecessor has not arrived is parked under its group and the
record it is about (its key). When a delivery about that record is applied in that group, every
delivery parked there is released at once: no redelivery storm while the predecessor is missing,
no backoff to sit out once it is there. The backoff still releases a parked delivery in the end,
for when its predecessor is applied somewhere this process cannot hear of (another process).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

Spot = tuple[str, str]  # (group, key)

# How many records' last application are remembered, to catch one applied while a delivery
# about it was being refused (see ``moved_since``).
_REMEMBERED = 4096


@dataclass(eq=False, slots=True)
class _Parked:
    spot: Spot | None
    release: Callable[[], None]
    timer: asyncio.TimerHandle | None = field(default=None)


class Parking:
    def __init__(self) -> None:
        # Ordered (dicts, not sets): what was parked first is released first.
        self._spots: dict[Spot, dict[_Parked, None]] = {}
        self._all: dict[_Parked, None] = {}
        self._applied: OrderedDict[Spot, int] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._all)

    def mark(self) -> int:
        """Taken when a delivery starts: ``moved_since`` later compares against it."""
        return self._seq

    def moved_since(self, group: str, key: str, mark: int) -> bool:
        """Whether a delivery about ``key`` was applied in ``group`` since ``mark``.

        Then a delivery refused meanwhile may have read the record just before it moved on: it
        must come again now, not wait for a wake-up that has already happened.
        """
        return self._applied.get((group, key), -1) > mark

    def applied(self, group: str, key: str) -> None:
        """A delivery about ``key`` was applied in ``group``: release what waits for that record."""
        self._seq += 1
        spot = (group, key)
        self._applied[spot] = self._seq
        self._applied.move_to_end(spot)
        if len(self._applied) > _REMEMBERED:
            self._applied.popitem(last=False)
        for parked in list(self._spots.get(spot, ())):
            self._release(parked)

    def park(self, group: str, key: str | None, delay: float, release: Callable[[], None]) -> None:
        """Call ``release`` after ``delay`` seconds, or sooner when ``key`` moves on in ``group``."""
        parked = _Parked((group, key) if key is not None else None, release)
        self._all[parked] = None
        if parked.spot is not None:
            self._spots.setdefault(parked.spot, {})[parked] = None
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(max(delay, 0.0), self._release, parked)

    def clear(self) -> None:
        """Forget every parked delivery without releasing it (the bus is closing)."""
        for parked in self._all:
            if parked.timer is not None:
                parked.timer.cancel()
        self._all.clear()
        self._spots.clear()

    def _release(self, parked: _Parked) -> None:
        if parked not in self._all:
            return
        del self._all[parked]
        if parked.timer is not None:
            parked.timer.cancel()
        if parked.spot is not None:
            waiting = self._spots[parked.spot]
            del waiting[parked]
            if not waiting:
                del self._spots[parked.spot]
        parked.release()
