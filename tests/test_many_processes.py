"""Many processes, one PostgreSQL, a three-node NATS cluster: losing one part under load loses nothing.

Four real ``ticketing run`` instances (two ``users,tickets``, two ``orders``) share one PostgreSQL
database and a three-node cluster with replicated streams; a mixed load from many users is spread
over them as a load balancer would. Then one part dies: a NATS node; an instance that could no
longer reach NATS, with events committed and unrelayed (it is not restarted: the others relay
them); one worker of an instance that runs ``--workers 2``. After each, from outside only: nothing
acknowledged is lost, every copy equals its ticket, each ticket is held by its one live order,
each event was published once and applied once per group (as the processes' live streams tell),
and nothing was dead-lettered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest
from sqlalchemy.engine import make_url

from app.waiting import eventually
from tests.conftest import JWT_SECRET, POSTGRES_URL, postgres_database
from tests.faults.load import Load, Shop, check_everything_converged, settle
from tests.nats_server import NatsCluster
from tests.processes import AppProcess
from tests.proxy import FreezableProxy
from tests.recorder import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.nats, pytest.mark.postgres, pytest.mark.timeout(300)]

STREAM = "MANY"
INSTANCES = {
    "tickets-1": "users,tickets",
    "tickets-2": "users,tickets",
    "orders-1": "orders",
    "orders-2": "orders",
}


@dataclass
class Estate:
    cluster: NatsCluster
    instances: dict[str, AppProcess]
    shop: Shop
    database: str
    # The NATS link of the one instance that talks to NATS through it, which the test can freeze.
    link: FreezableProxy | None = None

    @property
    def urls(self) -> list[str]:
        return [instance.url for instance in self.instances.values()]


@asynccontextmanager
async def estate(
    cluster: NatsCluster, workdir: Path, *, linked: str | None = None, workers: str | None = None
) -> AsyncIterator[Estate]:
    assert POSTGRES_URL is not None
    async with AsyncExitStack() as stack:
        # A fresh, empty database: the instances migrate it, together, as they start.
        database = await stack.enter_async_context(postgres_database(POSTGRES_URL))
        link = None
        if linked is not None:
            link = await FreezableProxy(cluster.nodes[0].port).start()
            stack.push_async_callback(link.close)
        instances = {}
        for name, modules in INSTANCES.items():
            servers = link.url if name == linked and link is not None else cluster.url
            env = {
                "TICKETING_MODULES": modules,
                "TICKETING_DATABASE_URL": database,
                "TICKETING_BUS_URL": f"{servers}?stream={STREAM}&replicas=3",
                "TICKETING_JWT_SECRET": JWT_SECRET,
            }
            args = ["--workers", "2"] if name == workers else []
            instances[name] = AppProcess(env, cwd=workdir, args=args)
            stack.push_async_callback(instances[name].stop)
        await asyncio.gather(*(instance.start(timeout=60) for instance in instances.values()))
        shop = Shop(
            [instances["tickets-1"].url, instances["tickets-2"].url],
            {"/api/orders": [instances["orders-1"].url, instances["orders-2"].url]},
        )
        yield Estate(cluster, instances, shop, database, link)


async def unsent_rows(database: str) -> int:
    url = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM bus_outbox WHERE published_at IS NULL"))
    finally:
        await connection.close()


async def stream_leader(cluster: NatsCluster) -> int:
    alive = next(node for node in cluster.nodes if node.running)
    connection = await nats.connect(alive.url)
    try:
        info = await connection.jetstream().stream_info(STREAM)
    finally:
        await connection.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return int(info.cluster.leader.removeprefix("n"))


def check_published_once_and_applied_once(recorder: Recorder, died: Collection[str | int] = ()) -> None:
    """``died``: the processes killed, by URL (an instance) or pid (one worker of several)."""
    applied = recorder.applied()
    twice = {key: count for key, count in applied.items() if count > 1}
    assert not twice, f"applied more than once in a group: {twice}"
    # A process that died after publishing and before marking its rows sent leaves them to be
    # published again by another: those alone may be published twice.
    excused = {message for process in died for message in recorder.published_by(process)}
    again = {message: count for message, count in recorder.published().items() if count > 1 and message not in excused}
    assert not again, f"published more than once: {again}"


async def run_fault(estate_: Estate, recorder: Recorder, fault: str) -> float:
    async with Load(estate_.shop, users=8) as load:
        await load.until_acknowledged(60)
        died = await FAULTS[fault](estate_, load)
        await load.until_acknowledged(60)
    stopped = time.monotonic()
    await settle(estate_.shop, timeout=60)
    took = time.monotonic() - stopped
    await check_everything_converged(estate_.shop, load)
    check_published_once_and_applied_once(recorder, died)
    return took


async def kill_a_nats_node(estate_: Estate, load: Load) -> set[str | int]:
    # The stream's leader, for the worst of it: the stream must elect another and go on.
    await asyncio.to_thread(estate_.cluster.nodes[await stream_leader(estate_.cluster)].kill)
    await load.until_acknowledged(30)
    return set()


async def kill_an_instance_with_events_unrelayed(estate_: Estate, load: Load) -> set[str | int]:
    victim = estate_.instances["tickets-2"]
    assert estate_.link is not None
    estate_.link.freeze()  # its link to NATS goes quiet: it serves, commits, and cannot publish
    await load.until_acknowledged(40)
    assert await unsent_rows(estate_.database) > 0, "the victim had events committed and unrelayed"
    await victim.kill()  # and it is never restarted
    estate_.shop.gone.add(victim.url)
    return {victim.url}


async def kill_one_worker(estate_: Estate, load: Load) -> set[str | int]:
    instance = estate_.instances["orders-1"]
    before = instance.workers()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    # uvicorn's supervisor starts another in its place.
    await eventually(lambda: len(set(instance.workers()) - set(before)) == 1, timeout=30, what="a new worker")
    return {before[0]}


FAULTS = {
    "a NATS node": kill_a_nats_node,
    "an instance with events unrelayed": kill_an_instance_with_events_unrelayed,
    "one worker of --workers 2": kill_one_worker,
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_many_processes_lose_nothing_when_one_part_dies(
    fault: str, nats_cluster: NatsCluster, tmp_path: Path, settle_times: dict[str, float]
) -> None:
    linked = "tickets-2" if fault == "an instance with events unrelayed" else None
    workers = "orders-1" if fault == "one worker of --workers 2" else None
    async with (
        estate(nats_cluster, tmp_path, linked=linked, workers=workers) as here,
        Recorder(here.urls, streams=4) as recorder,
    ):
        settle_times[f"many-processes: {fault}"] = await run_fault(here, recorder, fault)
