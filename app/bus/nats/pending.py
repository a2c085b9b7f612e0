"""What ``/ops/bus`` calls pending for the NATS bus: messages a group of this process has still to settle.

Two kinds are counted. Messages published here are *expected* from the moment they are sent
until a local member settles them, or until the group's ack floor shows that a member in
another process did. Messages published elsewhere are counted while a local member has them
in hand. Either way a message counts once, however many of its deliveries are outstanding.
"""

from __future__ import annotations

from dataclasses import dataclass

# (event id, group name)
Key = tuple[str, str]


@dataclass(eq=False, slots=True)
class Expected:
    """A message published here that a local group has still to settle."""

    consumer: str
    since: float
    count: int = 1
    seq: int = 0


class Pending:
    def __init__(self) -> None:
        self._outstanding: dict[str, int] = {}
        self._expected: dict[Key, Expected] = {}

    def __len__(self) -> int:
        return len(self._outstanding)

    def hold(self, message_id: str) -> None:
        self._outstanding[message_id] = self._outstanding.get(message_id, 0) + 1

    def release(self, message_id: str) -> None:
        left = self._outstanding.get(message_id, 0) - 1
        if left > 0:
            self._outstanding[message_id] = left
        else:
            self._outstanding.pop(message_id, None)

    def expect(self, key: Key, consumer: str, now: float) -> None:
        entry = self._expected.get(key)
        if entry is None:
            self._expected[key] = Expected(consumer, now)
        else:
            entry.count += 1
        self.hold(key[0])

    def unexpect(self, key: Key) -> None:
        entry = self._expected.get(key)
        if entry is None:
            return
        entry.count -= 1
        if entry.count <= 0:
            del self._expected[key]
        self.release(key[0])

    def expects(self, key: Key) -> bool:
        return key in self._expected

    def stored(self, key: Key, seq: int) -> None:
        """The server stored the message at stream sequence ``seq``: its group's ack floor will pass it."""
        if entry := self._expected.get(key):
            entry.seq = seq

    def overdue(self, since: float) -> list[tuple[Key, Expected]]:
        """Expectations older than ``since`` whose messages the server has stored."""
        return [(key, entry) for key, entry in self._expected.items() if entry.seq and entry.since < since]

    def settle_acked(self, overdue: list[tuple[Key, Expected]], floors: dict[str, int]) -> None:
        """Drop what the consumers' ack floors show settled, whichever member settled it."""
        for key, entry in overdue:
            while self._expected.get(key) is entry and entry.seq <= floors.get(entry.consumer, 0):
                self.unexpect(key)
