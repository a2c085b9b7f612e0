"""``GET /schema/asyncapi.json``: the events as an AsyncAPI 3.0 document, built from the code itself.

Payload schemas come from the msgspec types the modules publish (``app.common.events``), who
publishes a subject from each module's ``publishes``, who receives it from each module's
listeners, and the examples are events encoded as the outbox encodes them. Nothing here is a
hand-kept copy that could drift from what travels.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from litestar import MediaType, Response, get
from litestar.datastructures import State

from app.bus.outbox import encode
from app.common.events import (
    PAYLOADS,
    Event,
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    OrderTicket,
    Subjects,
    TicketCreated,
    TicketRef,
    TicketUpdated,
    UserSignedOut,
)
from app.common.module import Module
from app.settings import KNOWN_MODULES

# How an event travels on NATS JetStream (app/bus/nats: wire.py for the headers, bus.py for the
# subjects), written here without importing the driver, which only the NATS backend may do.
DEFAULT_STREAM = "TICKETING"
EVENT_ID = "Nats-Msg-Id"
OCCURRED_AT = "Ticketing-Occurred-At"
SOURCE = "Ticketing-Source"
NATS_BINDING = "0.1.0"
_REF = "#/components/schemas/{name}"

_TICKET = "0190a0b2-1c3d-7e4f-8a5b-6c7d8e9f0a1b"
_ORDER = "0190a0b2-5f6e-7d8c-9b0a-1f2e3d4c5b6a"
_USER = "0190a0b1-0a0b-7c0d-8e0f-101112131415"
_EXPIRES = datetime(2026, 6, 1, 18, 15, tzinfo=UTC)
_EXAMPLES: dict[Subjects, Event] = {
    Subjects.TICKET_CREATED: TicketCreated(
        id=_TICKET, version=0, title="concert", price=Decimal("20.00"), user_id=_USER
    ),
    Subjects.TICKET_UPDATED: TicketUpdated(
        id=_TICKET, version=2, title="concert", price=Decimal("25.00"), user_id=_USER, order_id=_ORDER
    ),
    Subjects.ORDER_CREATED: OrderCreated(
        id=_ORDER,
        version=0,
        status=OrderStatus.CREATED,
        user_id=_USER,
        expires_at=_EXPIRES,
        ticket=OrderTicket(id=_TICKET, price=Decimal("25.00")),
    ),
    Subjects.ORDER_CANCELLED: OrderCancelled(id=_ORDER, version=1, ticket=TicketRef(_TICKET)),
    Subjects.USER_SIGNED_OUT: UserSignedOut(
        id="0190a0c4-2b1a-7f3e-9d8c-7b6a5f4e3d2c", version=0, user_id=_USER, expires_at=_EXPIRES
    ),
}


def name_of(subject: Subjects) -> str:
    """``ticket:created`` as an AsyncAPI key: ``ticketCreated``."""
    first, *rest = subject.replace(":", " ").split()
    return first + "".join(word.capitalize() for word in rest)


def nats_subject(subject: str, bus_url: str) -> str:
    """The NATS subject an event travels on: ``<stream, lower-cased>.events.<subject>``."""
    return f"{stream_of(bus_url).lower()}.events.{subject}"


def stream_of(bus_url: str) -> str:
    parts = urlsplit(bus_url)
    streams = parse_qs(parts.query).get("stream") if parts.scheme.lower() == "nats" else None
    return streams[-1] if streams else DEFAULT_STREAM


def all_modules() -> list[Module]:
    """Every module of the system, whichever this process runs: the events are one contract."""
    return [importlib.import_module(f"app.{name}").module for name in KNOWN_MODULES]


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(list(PAYLOADS.values()), ref_template=_REF)
    return {name: _as_sent(schema) for name, schema in components.items()} | {"Envelope": _envelope()}


def _as_sent(schema: Any) -> Any:
    """msgspec describes a Decimal as a string; the outbox sends it as a JSON number."""
    if schema == {"type": "string", "format": "decimal"}:
        return {"type": "number", "description": "Exact, with at most two decimals"}
    if isinstance(schema, dict):
        return {key: _as_sent(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_as_sent(value) for value in schema]
    return schema


def _envelope() -> dict[str, Any]:
    return {
        "title": "Envelope",
        "description": "What travels beside the payload: on NATS, these message headers",
        "type": "object",
        "properties": {
            EVENT_ID: {
                "type": "string",
                "description": "The event's id, unique: a receiver that saw it already can drop it",
            },
            OCCURRED_AT: {
                "type": "string",
                "format": "date-time",
                "description": "When the change that caused the event was committed (ISO 8601, UTC)",
            },
            SOURCE: {"type": "string", "description": "The module that published it", "enum": list(KNOWN_MODULES)},
        },
        "required": [EVENT_ID, OCCURRED_AT],
    }


def _message(subject: Subjects, publisher: str | None) -> dict[str, Any]:
    payload = PAYLOADS[subject]
    example = _EXAMPLES[subject]
    headers = {EVENT_ID: "0190a0b3-7a6b-7c5d-8e4f-3a2b1c0d9e8f", OCCURRED_AT: "2026-06-01T18:00:00.000000+00:00"}
    if publisher:
        headers[SOURCE] = publisher
    return {
        "name": str(subject),
        "title": str(subject),
        "summary": (payload.__doc__ or "").strip(),
        "contentType": "application/json",
        "headers": {"$ref": _REF.format(name="Envelope")},
        "payload": {"$ref": _REF.format(name=payload.__name__)},
        "examples": [{"name": name_of(subject), "headers": headers, "payload": msgspec.json.decode(encode(example))}],
    }


def _operations(modules: Iterable[Module]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for module in modules:
        for subject in module.publishes:
            operations[f"{module.name}.publish.{name_of(subject)}"] = _operation(
                "send", subject, module.name, f"The {module.name} module publishes {subject}"
            )
        for listener in module.listeners:
            operation = _operation(
                "receive",
                listener.subject,
                module.name,
                f"{listener.group} ({module.name}) receives {listener.subject}",
            )
            # The NATS binding's queue: every group gets each event, one member of it handles it.
            operation["bindings"] = {"nats": {"queue": str(listener.group), "bindingVersion": NATS_BINDING}}
            operations[f"{module.name}.receive.{name_of(listener.subject)}"] = operation
    return operations


def _operation(action: str, subject: Subjects, module: str, summary: str) -> dict[str, Any]:
    channel = name_of(subject)
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{channel}"}],
        "summary": summary,
        "tags": [{"name": module}],
    }


def _servers(bus_url: str) -> dict[str, Any]:
    parts = urlsplit(bus_url)
    if parts.scheme.lower() != "nats":
        return {}
    hosts = parts.netloc.rpartition("@")[2].split(",")
    description = f"NATS JetStream, stream {stream_of(bus_url)}"
    return {f"nats{n}": {"host": host, "protocol": "nats", "description": description} for n, host in enumerate(hosts)}


@functools.cache
def document(bus_url: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every module's events, for a bus at ``bus_url``."""
    modules = all_modules()
    publisher = {subject: module.name for module in modules for subject in module.publishes}
    channels = {
        name_of(subject): {
            "address": nats_subject(subject, bus_url),
            "title": str(subject),
            "description": f"{subject} events, published by the {publisher.get(subject, 'no')} module",
            "messages": {name_of(subject): {"$ref": f"#/components/messages/{name_of(subject)}"}},
        }
        for subject in Subjects
    }
    body: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ticketing events",
            "version": "0.1.0",
            "description": (
                "The integration events the modules publish and hear. Each is a JSON payload; the "
                "envelope (event id, when it occurred, which module sent it) travels as NATS headers. "
                "Every queue group receives every event, and one member of the group handles it."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": _operations(modules),
        "components": {
            "messages": {name_of(s): _message(s, publisher.get(s)) for s in Subjects},
            "schemas": _schemas(),
        },
    }
    if servers := _servers(bus_url):
        body["servers"] = servers
    return body


@get("/schema/asyncapi.json", include_in_schema=False, media_type=MediaType.JSON, cache_control=None)
async def asyncapi(state: State) -> Response[dict[str, Any]]:
    return Response(document(state.settings.bus.url))


routes = [asyncapi]
