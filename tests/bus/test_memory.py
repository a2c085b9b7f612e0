"""What only the in-memory backend does: chaos, and choosing backends by URL."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from app.bus import Delivery, DeliveryPolicy, Retry, create_bus, signals
from app.bus.memory import Chaos, MemoryBus
from app.settings import SettingsError
from app.waiting import eventually
from tests.bus.test_contract import message


async def deliveries_under_chaos(seed: int, count: int = 100) -> tuple[list[str], list[str]]:
    bus = MemoryBus(DeliveryPolicy(), Chaos(seed=seed, max_delay=0.01, duplicates=0.3))
    await bus.connect()
    got: list[str] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.id)

    await bus.subscribe("ticket:updated", "orders-service", handler)
    sent = [message("ticket:updated", str(n)) for n in range(count)]
    await bus.publish(sent)
    await eventually(lambda: bus.pending == 0)
    await bus.close()
    return [m.id for m in sent], got


async def test_chaos_delivers_out_of_order_and_some_messages_twice() -> None:
    sent, got = await deliveries_under_chaos(seed=7)
    counts = Counter(got)
    assert set(got) == set(sent), "nothing is lost"
    assert any(n == 2 for n in counts.values()), "some messages come twice"
    first_seen = list(dict.fromkeys(got))
    assert first_seen != sent, "and not in the order they were published"


async def test_chaos_is_reproducible_from_its_seed() -> None:
    def duplicated(sent: list[str], got: list[str]) -> list[int]:
        counts = Counter(got)
        return [index for index, mid in enumerate(sent) if counts[mid] == 2]

    first = duplicated(*await deliveries_under_chaos(seed=42))
    again = duplicated(*await deliveries_under_chaos(seed=42))
    other = duplicated(*await deliveries_under_chaos(seed=43))
    assert first == again
    assert first != other
    assert [Chaos(seed=3).delays() for _ in range(20)] == [Chaos(seed=3).delays() for _ in range(20)]


def test_bus_url_picks_the_backend_and_its_options() -> None:
    plain = create_bus("memory://")
    assert isinstance(plain, MemoryBus)
    assert plain.chaos is None
    retaining = create_bus("memory://?retain=5")
    assert isinstance(retaining, MemoryBus)
    assert retaining.retain == 5
    chaotic = create_bus("memory://?chaos=9&chaos_delay=0.5&max_deliver=3&backoff=0.2&backoff_max=1")
    assert isinstance(chaotic, MemoryBus)
    assert chaotic.chaos is not None
    assert (chaotic.chaos.seed, chaotic.chaos.max_delay) == (9, 0.5)
    assert chaotic.policy == DeliveryPolicy(max_deliver=3, backoff=0.2, backoff_max=1)
    assert chaotic.describe() == "in-memory bus (chaos seed 9)"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("kafka://localhost", "unsupported bus URL"),
        ("memory://?chaos=abc", "chaos='abc' is not a valid int"),
        ("memory://?colour=blue", "unknown option 'colour'"),
        ("memory://?chaos_delay=1", "need chaos=SEED"),
        ("memory://?max_deliver=0", "max_deliver must be at least 1"),
        ("memory://?chaos=1&chaos_duplicates=2", "duplicates <= 1"),
        ("memory://?retain=-1", "retain must be >= 0"),
    ],
)
def test_a_bad_bus_url_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        create_bus(url)


async def test_a_failing_observer_neither_stops_the_group_nor_loses_the_message() -> None:
    bus = MemoryBus(DeliveryPolicy(backoff=0.001, backoff_max=0.01))
    handled: list[int] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.attempt)

    broken = [True]

    def observer(_bus: object, **_: object) -> None:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("an observer with a bug")

    signals.delivery_finished.connect(observer, sender=bus)
    try:
        await bus.subscribe("ticket:created", "orders-service", handler)
        await bus.publish([message("ticket:created", "a")])
        await eventually(lambda: bus.pending == 0)
        await bus.publish([message("ticket:created", "b")])
        await eventually(lambda: bus.pending == 0)
    finally:
        signals.delivery_finished.disconnect(observer, sender=bus)
        await bus.close()
    # The first delivery ran, its observer failed; it came again, and the group went on.
    assert handled == [1, 2, 1]


async def test_a_late_group_gets_what_is_retained_and_memory_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = MemoryBus(retain=3)
    await bus.publish([message("ticket:created", str(n)) for n in range(10)])
    await bus.publish([message("ticket:updated", str(n)) for n in range(3)])
    got: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.data)

    with caplog.at_level(logging.WARNING, logger="ticketing.bus"):
        await bus.subscribe("ticket:created", "late", handler)
        await bus.subscribe("ticket:updated", "late", handler)
    await eventually(lambda: bus.pending == 0 and len(got) == 6)
    await bus.close()
    assert got[:3] == [b"7", b"8", b"9"]
    # The gap is said out loud, once, for the subject that has one.
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "[bus] Group late subscribed late to ticket:created: its 7 oldest message(s) were already "
        "forgotten (retain=3) and will not be delivered to it"
    ]


async def test_a_bus_closed_and_connected_again_settles_what_its_new_group_handles() -> None:
    # The first connection's groups go with it: they must neither keep hearing the subject (the
    # new messages would queue where no worker takes them) nor keep counting as pending.
    bus = MemoryBus(DeliveryPolicy(backoff=0.001, backoff_max=0.01))
    await bus.connect()

    async def not_yet(delivery: Delivery) -> None:
        raise Retry("not before the restart")

    await bus.subscribe("ticket:created", "orders-service", not_yet)
    await bus.publish([message("ticket:created", "before")])
    await eventually(lambda: bus.stats.redelivered > 0)
    await bus.close()

    await bus.connect()
    got: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message.data)

    await bus.subscribe("ticket:created", "orders-service", handler)
    await bus.publish([message("ticket:created", "after")])
    try:
        await eventually(lambda: bus.pending == 0, timeout=2, what="pending back to 0 after the restart")
    finally:
        await bus.close()
    # The unsettled one comes again from the bus's history, to the group that is there now.
    assert sorted(got) == [b"after", b"before"]


async def test_a_lasting_observer_fault_dead_letters_the_message_instead_of_cycling_for_ever() -> None:
    bus = MemoryBus(DeliveryPolicy(max_deliver=3, backoff=0.001, backoff_max=0.002))

    async def handler(delivery: Delivery) -> None:
        return None

    def broken(_bus: object, **_: object) -> None:
        raise RuntimeError("an observer that always fails")

    signals.delivery_finished.connect(broken, sender=bus)
    try:
        await bus.subscribe("ticket:created", "orders-service", handler)
        await bus.publish([message("ticket:created", "a")])
        await eventually(lambda: bus.pending == 0)
        [dead] = await bus.dead_letters()
    finally:
        signals.delivery_finished.disconnect(broken, sender=bus)
        await bus.close()
    assert (dead.attempts, bus.stats.dead_lettered) == (3, 1)
