"""One trace from an HTTP request through the outbox and the bus into every listener, and on: over memory and NATS.

The SDK's in-memory exporter stands where an OTLP collector would; everything else is the app's
own: Litestar's request spans, the producer span of each staged event, the consumer span of each
delivery, the W3C context in the outbox row and (over NATS) in the message's headers.
"""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.bus import tracing as bus_tracing
from app.settings import Settings, TracingSettings
from app.waiting import eventually
from tests.conftest import Api, AppFactory, make_settings
from tests.deployments import FAST_BUS, nats_bus_url
from tests.nats_server import NatsServer


@pytest.fixture(scope="session")
def exported() -> InMemorySpanExporter:
    """The process's tracer provider, as OTEL_* would make it, exporting to memory (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def traced(database_url: str, bus_url: str) -> Settings:
    # The provider is set already (above), so the app exports nothing itself: "otlp" only turns tracing on.
    return dataclasses.replace(make_settings(database_url, bus_url), tracing=TracingSettings(("otlp",)))


def children(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if span.name == name and span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def one_child(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> ReadableSpan:
    found = children(spans, parent, name)
    assert len(found) == 1, f"{name} under {parent.name}: {[(s.name, s.parent) for s in spans]}"
    return found[0]


@pytest.mark.parametrize("bus", ["memory", pytest.param("nats", marks=pytest.mark.nats)])
async def test_an_order_traces_from_its_request_to_both_listeners(
    bus: str, request: pytest.FixtureRequest, start_app: AppFactory, database_url: str, exported: InMemorySpanExporter
) -> None:
    server: NatsServer | None = request.getfixturevalue("nats_server") if bus == "nats" else None
    bus_url = nats_bus_url(server.url) if server else FAST_BUS
    async with start_app(settings=traced(database_url, bus_url)) as api:
        ticket = await api.create_ticket(api.auth())
        await api.settled()
        exported.clear()
        await api.order(api.auth(), ticket["id"])
        await api.settled()

        def the_order() -> list[ReadableSpan] | None:
            spans = list(exported.get_finished_spans())
            done = any(s.name == "process ticket:updated" for s in spans)
            return spans if done else None

        spans = await eventually(the_order, what="the orders listener's span")
    [request_span] = [s for s in spans if s.name == "POST /api/orders" and s.parent is None]
    trace_id = request_span.context.trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}, "one trace, from the request on"
    # The request, order:created, the tickets listener, ticket:updated, the orders listener.
    sent = one_child(spans, request_span, "publish order:created")
    heard = one_child(spans, sent, "process order:created")
    assert (heard.attributes or {})["messaging.consumer.group.name"] == "tickets-service"
    assert (heard.attributes or {})["ticketing.fate"] == "applied"
    reserved = one_child(spans, heard, "publish ticket:updated")
    copied = one_child(spans, reserved, "process ticket:updated")
    assert (copied.attributes or {})["messaging.consumer.group.name"] == "orders-service"
    assert (copied.attributes or {})["messaging.system"] == ("NATS" if bus == "nats" else "in-memory bus")


async def test_untraced_the_bus_makes_no_span_and_events_carry_no_context(
    api: Api, exported: InMemorySpanExporter
) -> None:
    assert not bus_tracing.enabled()
    exported.clear()
    ticket = await api.create_ticket(api.auth())
    await api.settled()
    await api.order(api.auth(), ticket["id"])
    await api.settled()
    assert list(exported.get_finished_spans()) == []
    from sqlalchemy import select

    from app.bus.outbox import OutboxRecord

    async with api.runtime.sessionmaker() as session:
        assert (await session.scalars(select(OutboxRecord.trace))).all() == [None, None, None]
