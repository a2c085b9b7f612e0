"""Choosing the NATS backend by URL: options parsed, bad ones refused; no server needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.bus import DeliveryPolicy, create_bus
from app.bus.nats import NatsBus, durable_name
from app.settings import SettingsError

APP = Path(__file__).resolve().parents[2] / "app"


def test_a_nats_url_picks_the_nats_backend_with_its_defaults() -> None:
    bus = create_bus("nats://127.0.0.1:4222")
    assert isinstance(bus, NatsBus)
    options = bus.options
    assert (bus.kind, options.servers, options.stream, options.dead_stream) == (
        "NATS",
        ("nats://127.0.0.1:4222",),
        "TICKETING",
        "TICKETING_DEAD",
    )
    assert (options.ack_wait, options.batch) == (5.0, 128)
    assert bus.policy == DeliveryPolicy()
    assert bus.describe() == "NATS nats://127.0.0.1:4222 (JetStream, stream TICKETING)"
    assert bus.pending == 0


def test_a_nats_url_takes_stream_ack_wait_batch_and_delivery_options() -> None:
    bus = create_bus(
        "nats://nats.internal:4333?stream=ORDERS_1&ack_wait=2.5&batch=16&max_age=86400"
        "&max_deliver=3&backoff=0.1&backoff_max=1"
    )
    assert isinstance(bus, NatsBus)
    options = bus.options
    assert (options.servers, options.stream, options.ack_wait, options.batch) == (
        ("nats://nats.internal:4333",),
        "ORDERS_1",
        2.5,
        16,
    )
    assert options.max_age == 86400
    assert bus.policy == DeliveryPolicy(max_deliver=3, backoff=0.1, backoff_max=1)
    assert bus.describe() == "NATS nats://nats.internal:4333 (JetStream, stream ORDERS_1)"


def test_a_nats_url_keeps_its_credentials_for_connecting_and_shows_them_to_nobody() -> None:
    bus = create_bus("nats://app:s3cret@nats.internal:4333?stream=S")
    assert isinstance(bus, NatsBus)
    assert bus.options.servers == ("nats://app:s3cret@nats.internal:4333",)
    assert bus.describe() == "NATS nats://nats.internal:4333 (JetStream, stream S)"
    assert "s3cret" not in bus.describe()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("nats://localhost:4222?colour=blue", "unknown option 'colour'"),
        ("nats://localhost:4222?chaos=1", "unknown option 'chaos'"),
        ("nats://localhost:4222?ack_wait=soon", "ack_wait='soon' is not a valid float"),
        ("nats://localhost:4222?ack_wait=0", "ack_wait must be > 0"),
        ("nats://localhost:4222?max_age=-1", "max_age must be >= 0"),
        ("nats://localhost:4222?batch=0", "batch must be at least 1"),
        ("nats://localhost:4222?batch=many", "batch='many' is not a valid int"),
        ("nats://localhost:4222?stream=a.b", "stream 'a.b'"),
        ("nats://localhost:4222?stream=", "stream ''"),
        ("nats://localhost:4222?max_deliver=0", "max_deliver must be at least 1"),
        ("nats://localhost:4222?max_wait=0", "max_wait must be > 0"),
        ("nats://localhost:4222?max_wait=5", r"max_wait \(5s\) must outlast ack_wait \(5s\)"),
        ("nats://localhost:4222?ack_wait=700", r"max_wait \(600s\) must outlast ack_wait \(700s\)"),
        ("nats://", "not a nats://host:port URL"),
        ("nats://localhost:4222/events", "has no path"),
    ],
)
def test_a_bad_nats_url_is_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        create_bus(url)


def test_without_nats_py_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if nats-py were not installed: importing it fails, and the backend is imported afresh.
    monkeypatch.setitem(sys.modules, "nats", None)
    for name in [name for name in sys.modules if name == "app.bus.nats" or name.startswith("app.bus.nats.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(SettingsError, match=r"pip install 'ticketing\[nats\]'"):
        create_bus("nats://localhost:4222")


def test_the_memory_backend_runs_without_importing_nats_py() -> None:
    script = "import sys, app.bus; app.bus.create_bus('memory://'); assert 'nats' not in sys.modules, 'nats imported'"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=APP.parent)


def test_durable_names_are_safe_for_nats_and_distinct() -> None:
    names = {
        durable_name("ticket:created", "orders-service"),
        durable_name("ticket_created", "orders-service"),
        durable_name("ticket.created", "orders service"),
        durable_name("ticket:created", "orders-service>*"),
    }
    assert len(names) == 4
    for name in names:
        assert not set(name) & set(". *>:/\\"), name
    assert durable_name("ticket:created", "orders-service").startswith("orders-service__ticket_created_")
