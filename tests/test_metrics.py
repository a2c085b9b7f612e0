"""``GET /metrics``: Prometheus text that prometheus_client's own parser reads, guarded like ``/ops``."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.bus import Delivery, Message, Outcome, Retry
from app.clock import utcnow
from app.waiting import eventually
from tests.conftest import JWT_SECRET, Api, AppFactory
from tests.nats_server import NatsServer
from tests.processes import AppProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_count_events_deliveries_and_http_requests(api: Api) -> None:
    before = await scrape(api.http)
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    await api.settled()
    await api.order(api.auth(), ticket["id"])
    await api.settled()
    after = await scrape(api.http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ticketing_events_published_total", subject="ticket:created") == 1
    assert grew("ticketing_events_published_total", subject="order:created") == 1
    assert grew("ticketing_events_published_total", subject="ticket:updated") == 1  # the reservation
    applied = {"group": "orders-service", "outcome": "applied"}
    assert grew("ticketing_deliveries_total", subject="ticket:created", **applied) == 1
    assert grew("ticketing_deliveries_total", subject="order:created", group="tickets-service", outcome="applied") == 1
    assert value(after, "ticketing_pending") == 0
    assert value(after, "ticketing_dead_letters") == 0
    assert value(after, "ticketing_outbox_backlog") == 0
    # HTTP by route template, so that ids do not make a series each.
    created = {"app_name": "ticketing", "method": "POST", "path": "/api/tickets", "status_code": "201"}
    assert grew("ticketing_http_requests_total", **created) == 1
    assert any(name == "ticketing_http_request_duration_seconds_count" for name, _ in after)
    assert not any(dict(labels).get("path", "").count("-") >= 4 for _, labels in after), "a raw id in a path label"


async def test_every_outcome_of_a_delivery_is_counted(start_app: AppFactory) -> None:
    async with start_app(bus_url="memory://?max_deliver=2&backoff=0.001&backoff_max=0.002") as api:
        bus = api.runtime.bus
        subject, group = f"probe-{uuid.uuid4().hex[:6]}:happened", "probes"
        seen: dict[bytes, int] = {}

        async def probe(delivery: Delivery) -> Outcome:
            seen[delivery.message.data] = seen.get(delivery.message.data, 0) + 1
            if delivery.message.data == b"broken":
                raise RuntimeError("a bug")
            if delivery.message.data == b"early" and seen[b"early"] == 1:
                raise Retry("not yet")
            return Outcome.DUPLICATE if delivery.message.data == b"again" else Outcome.APPLIED

        await bus.subscribe(subject, group, probe)
        await bus.publish(
            [
                Message(id=str(uuid.uuid4()), subject=subject, data=data, occurred_at=utcnow())
                for data in (b"fine", b"again", b"early", b"broken")
            ]
        )
        await api.settled()
        found = await scrape(api.http)
        counted = {
            outcome: value(found, "ticketing_deliveries_total", subject=subject, group=group, outcome=outcome)
            for outcome in ("applied", "duplicate", "early", "failed", "dead")
        }
        # fine and early (at last) applied; again a duplicate; early refused once; broken failed, then dead.
        assert counted == {"applied": 2, "duplicate": 1, "early": 1, "failed": 1, "dead": 1}
        assert value(found, "ticketing_dead_letters") == 1


async def test_metrics_need_the_ops_token_when_it_is_set(start_app: AppFactory, database_url: str) -> None:
    from tests.conftest import make_settings

    settings = make_settings(database_url, "memory://")
    guarded = type(settings.auth)(jwt_secret=JWT_SECRET, generated_secret=False, ops_token="s3cret-ops-token")
    async with start_app(settings=type(settings)(database=settings.database, bus=settings.bus, auth=guarded)) as api:
        refused = await api.http.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["message"].startswith("Not authorized")
        await scrape(api.http, {"Authorization": "Bearer s3cret-ops-token"})


@pytest.mark.slow
@pytest.mark.nats
async def test_with_workers_any_worker_answers_for_all_of_them(tmp_path: Path, nats_server: NatsServer) -> None:
    env = {"TICKETING_JWT_SECRET": JWT_SECRET, "TICKETING_BUS_URL": f"{nats_server.url}?stream=METRICS"}
    app = await AppProcess(env, cwd=tmp_path, args=["--workers", "2"]).start()
    try:
        await eventually(lambda: len(app.workers()) == 2, what="two workers")
        fresh = httpx.Limits(max_keepalive_connections=0)  # each request may reach the other worker
        async with httpx.AsyncClient(base_url=app.url, limits=fresh) as client:
            owner = Api.auth()
            for n in range(20):
                created = await client.post("/api/tickets", json={"title": f"t{n}", "price": 5}, headers=owner)
                assert created.status_code == 201

            applied = {"subject": "ticket:created", "group": "orders-service", "outcome": "applied"}

            async def every_worker_says_twenty() -> bool:
                scrapes = [await scrape(client) for _ in range(6)]
                return all(
                    value(found, "ticketing_events_published_total", subject="ticket:created") == 20
                    and value(found, "ticketing_deliveries_total", **applied) == 20
                    for found in scrapes
                )

            await eventually(every_worker_says_twenty, timeout=20, interval=0.2, what="every scrape to count all 20")
    finally:
        await app.stop()
