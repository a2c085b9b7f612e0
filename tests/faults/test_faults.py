"""Real faults under real load: every copy converges on its own, and nothing anyone was told is lost.

Each test starts real ``ticketing run`` processes (and, over NATS, a ``nats-server`` of its own),
drives a mixed concurrent load from many users, and meanwhile hits one process with one real
signal: SIGKILL (then a restart), SIGSTOP for longer than NATS's ``ack_wait`` (then SIGCONT),
SIGTERM (then a restart), or SIGTERM / SIGKILL of the NATS server (restarted on the same port
and store). The load carries on through the fault. Then the test waits for every process to
settle and judges from HTTP alone (``tests/faults/load.py``): no acknowledged write lost, every
copy equal to its ticket, each ticket held by its one live order, nothing dead-lettered, and the
listeners still at work. Nobody replays anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.bus.nats import NatsOptions
from tests.conftest import JWT_SECRET
from tests.faults.load import Load, Shop, check_everything_converged, settle
from tests.nats_server import NatsServer, binary_or_skip
from tests.processes import AppProcess

pytestmark = [pytest.mark.slow, pytest.mark.faults]

# Paused for longer than a delivery may go unanswered: NATS gives the process's messages away meanwhile.
PAUSE = NatsOptions.ack_wait + 2.0


@dataclass
class Deployment:
    shop: Shop
    apps: dict[str, AppProcess]
    nats: NatsServer | None


@asynccontextmanager
async def deployed(kind: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    """``memory`` and ``nats``: one process with every module; ``split``: users,tickets + orders."""
    async with AsyncExitStack() as stack:
        nats = None
        bus = "memory://"
        if kind != "memory":
            nats = NatsServer(binary_or_skip())
            stack.callback(nats.cleanup)
            await asyncio.to_thread(nats.start)
            bus = f"{nats.url}?stream=FAULTS"
        shared = {"TICKETING_BUS_URL": bus, "TICKETING_JWT_SECRET": JWT_SECRET}
        if kind == "split":
            services = {
                "tickets": {
                    "TICKETING_MODULES": "users,tickets",
                    "TICKETING_DATABASE_URL": _sqlite(tmp_path, "tickets"),
                },
                "orders": {"TICKETING_MODULES": "orders", "TICKETING_DATABASE_URL": _sqlite(tmp_path, "orders")},
            }
        else:
            services = {"app": {"TICKETING_DATABASE_URL": _sqlite(tmp_path, "app")}}
        apps = {name: AppProcess({**shared, **env}, cwd=tmp_path) for name, env in services.items()}
        for app in apps.values():
            stack.push_async_callback(app.stop)
            await app.start()
        if kind == "split":
            shop = Shop(apps["tickets"].url, {"/api/orders": apps["orders"].url})
        else:
            shop = Shop(apps["app"].url)
        yield Deployment(shop, apps, nats)


def _sqlite(folder: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{folder / f'{name}.db'}"


# Log lines of every event (the seed's two), left out of what a failure shows.
_ROUTINE = (
    "[tickets] Event published",
    "[orders] Event published",
    "[tickets] Message received",
    "[orders] Message received",
)


# -- the faults: each returns once the system is whole again (restarted, resumed) ------------------

FaultStep = Callable[[Deployment, str, Load], Awaitable[None]]


async def sigkill(deployment: Deployment, target: str, load: Load) -> None:
    app = deployment.apps[target]
    await app.kill()
    await app.start()


async def sigterm(deployment: Deployment, target: str, load: Load) -> None:
    app = deployment.apps[target]
    await app.stop()
    await app.start()


async def sigstop(deployment: Deployment, target: str, load: Load) -> None:
    app = deployment.apps[target]
    app.pause()
    try:
        await asyncio.sleep(PAUSE)  # the fault itself lasts this long; nothing is being waited for
    finally:
        app.resume()


async def sigstop_then_sigkill(deployment: Deployment, target: str, load: Load) -> None:
    """The issue's first case: paused while others carry on, then killed and restarted."""
    app = deployment.apps[target]
    app.pause()
    try:
        await load.until_acknowledged(10)
    finally:
        await app.kill()
    await app.start()


async def nats_sigterm(deployment: Deployment, target: str, load: Load) -> None:
    assert deployment.nats is not None
    await asyncio.to_thread(deployment.nats.stop)
    await load.until_acknowledged(10)  # users carry on while the broker is down
    await asyncio.to_thread(deployment.nats.start)


async def nats_sigkill(deployment: Deployment, target: str, load: Load) -> None:
    assert deployment.nats is not None
    await asyncio.to_thread(deployment.nats.kill)
    await load.until_acknowledged(10)
    await asyncio.to_thread(deployment.nats.start)


FAULTS: dict[str, FaultStep] = {
    "SIGKILL": sigkill,
    "SIGSTOP": sigstop,
    "SIGTERM": sigterm,
    "SIGSTOP+SIGKILL": sigstop_then_sigkill,
    "nats-SIGTERM": nats_sigterm,
    "nats-SIGKILL": nats_sigkill,
}

SCENARIOS = [
    *(("memory", "app", fault) for fault in ("SIGKILL", "SIGSTOP", "SIGTERM")),
    *(("nats", "app", fault) for fault in ("SIGKILL", "SIGSTOP", "SIGTERM", "nats-SIGTERM", "nats-SIGKILL")),
    *(("split", "tickets", fault) for fault in ("SIGKILL", "SIGSTOP", "SIGTERM")),
    *(("split", "orders", fault) for fault in ("SIGKILL", "SIGSTOP", "SIGTERM", "SIGSTOP+SIGKILL")),
    *(("split", "broker", fault) for fault in ("nats-SIGTERM", "nats-SIGKILL")),
]


def _marks(kind: str) -> list[pytest.MarkDecorator]:
    return [] if kind == "memory" else [pytest.mark.nats]


@pytest.mark.parametrize(
    ("kind", "target", "fault"),
    [pytest.param(*scenario, id="-".join(scenario), marks=_marks(scenario[0])) for scenario in SCENARIOS],
)
async def test_every_copy_converges_after_a_real_fault_under_load(
    kind: str, target: str, fault: str, tmp_path: Path, settle_times: dict[str, float]
) -> None:
    async with deployed(kind, tmp_path) as deployment:
        async with Load(deployment.shop, seed=len(settle_times)) as load:
            await load.until_acknowledged(40)
            await FAULTS[fault](deployment, target, load)
            await load.until_acknowledged(40)
        stopped = time.monotonic()
        try:
            await settle(deployment.shop)
            settle_times[f"{kind}-{target}-{fault}"] = time.monotonic() - stopped
            await check_everything_converged(deployment.shop, load)
        except (AssertionError, TimeoutError):
            for name, app in deployment.apps.items():  # shown with the failure: what each process said
                print(f"==== {name}, the lines that say more than that all went well:")
                print("\n".join(line for line in app.lines if not line.startswith(_ROUTINE)))
            raise
