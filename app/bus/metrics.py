"""The bus's figures for ``/metrics``: counters fed by its signals as they happen, gauges read when asked.

prometheus_client keeps them for the whole process. With several processes writing to
``PROMETHEUS_MULTIPROC_DIR`` (``ticketing run --workers N``) each refreshes its gauges now and then,
so that whichever process answers a scrape reads its siblings' too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, multiprocess

from app.bus import signals
from app.bus.base import Bus
from app.bus.messages import Delivery, Message, Verdict
from app.bus.relay import Relay

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker refreshes its gauges in multiprocess mode, for the one answering a scrape.
_REFRESH_EVERY = 2.0
_DELIVERY_LABELS = ["subject", "group", "outcome"]
_LARGEST: dict[str, Any] = {"multiprocess_mode": "livemax"}
_SUMMED: dict[str, Any] = {"multiprocess_mode": "livesum"}
_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


@dataclass(frozen=True)
class Instruments:
    published: Counter
    deliveries: Counter
    dead_letters: Gauge
    pending: Gauge
    outbox: Gauge


@functools.cache
def instruments() -> Instruments:
    """The process's metrics, made on first use: in multiprocess mode making one opens its file."""
    return Instruments(
        published=Counter("ticketing_events_published", "Events published by this app", ["subject"]),
        deliveries=Counter(
            "ticketing_deliveries",
            "Deliveries to a queue group, by what became of them",
            ["subject", "group", "outcome"],
        ),
        # Every worker sees the same dead letters and the same server-side backlog: the largest, not the sum.
        dead_letters=Gauge("ticketing_dead_letters", "Dead letters kept", multiprocess_mode="livemax"),
        pending=Gauge(
            "ticketing_pending", "Events committed and not yet settled (0: settled)", multiprocess_mode="livemax"
        ),
        outbox=Gauge(
            "ticketing_outbox_backlog", "Events committed, not yet handed to the bus", multiprocess_mode="livesum"
        ),
    )


class BusMetrics:
    """Counts what one runtime's bus does, and reads its gauges; started and stopped with the runtime."""

    def __init__(self, bus: Bus, relay: Relay) -> None:
        self._bus = bus
        self._relay = relay
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        signals.published.connect(self._published, sender=self._bus)
        signals.delivery_finished.connect(self._finished, sender=self._bus)
        if os.environ.get(MULTIPROCESS_DIR):
            forget_dead_workers(Path(os.environ[MULTIPROCESS_DIR]))
            self._refresher = asyncio.create_task(self._refresh_now_and_then(), name="metrics-refresh")

    async def stop(self) -> None:
        signals.published.disconnect(self._published, sender=self._bus)
        signals.delivery_finished.disconnect(self._finished, sender=self._bus)
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    async def refresh(self) -> None:
        found = instruments()
        backlog = self._relay.backlog
        found.pending.set(await self._bus.count_pending() + backlog)
        found.dead_letters.set(len(await self._bus.dead_letters()))
        found.outbox.set(backlog)

    def _published(self, _bus: Bus, *, message: Message) -> None:
        instruments().published.labels(message.subject).inc()

    def _finished(self, _bus: Bus, *, delivery: Delivery, verdict: Verdict) -> None:
        instruments().deliveries.labels(delivery.message.subject, delivery.group, verdict.fate.value).inc()

    async def _refresh_now_and_then(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a bus or database down now and then: next time
                await self.refresh()
            await asyncio.sleep(_REFRESH_EVERY)


def forget_dead_workers(directory: Path) -> None:
    """Drop the gauges of workers that are gone (uvicorn's supervisor does not say): only live ones count."""
    for path in directory.glob("gauge_live*.db"):
        if (match := _GAUGE_FILE.fullmatch(path.name)) and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
