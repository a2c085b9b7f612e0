"""Health and operations routes: ``/health`` and ``/ops/*``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response, get, head, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from app import db
from app.common.errors import NotFound
from app.common.openapi import OPS_TOKEN, errors, without
from app.common.ops_token import ops_token_guard

if TYPE_CHECKING:
    from app.runtime import Runtime


class Health(msgspec.Struct, rename="camel"):
    status: str
    database: str
    database_ok: bool
    bus: str
    bus_ok: bool
    modules: list[str]


class BusCounters(msgspec.Struct, rename="camel"):
    published: int
    delivered: int
    acked: int
    redelivered: int
    dead_lettered: int
    pending: int


class DeadLetterView(msgspec.Struct, rename="camel"):
    id: str
    subject: str
    group: str
    attempts: int
    error: str
    payload: Any
    failed_at: datetime


_NEEDS_TOKEN = "Not authorized: /ops needs Authorization: Bearer $TICKETING_OPS_TOKEN"


def _runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


require_ops_token = ops_token_guard(_NEEDS_TOKEN)


@get(
    "/health",
    tags=["ops"],
    operation_id="health",
    cache_control=None,
    responses={
        503: ResponseSpec(Health, description="The database or the bus does not answer", generate_examples=False)
    },
)
async def health(state: State) -> Response[Health]:
    body = await _health(state)
    return Response(body, status_code=_status(body))


_NO_BODY_503 = ResponseSpec(None, description="The database or the bus does not answer")


# Uptime monitors and ``curl -I`` ask with HEAD: the same answer, without the body.
@head("/health", tags=["ops"], operation_id="healthHead", cache_control=None, responses={503: _NO_BODY_503})
async def health_head(state: State) -> Response[None]:
    return Response(None, status_code=_status(await _health(state)))


def _status(health: Health) -> int:
    return HTTP_200_OK if health.status == "ok" else HTTP_503_SERVICE_UNAVAILABLE


async def _health(state: State) -> Health:
    runtime = _runtime(state)
    database_ok = await db.ping(runtime.engine)
    bus_ok = await runtime.bus.ping()
    return Health(
        status="ok" if database_ok and bus_ok else "unavailable",
        database=db.describe(runtime.engine),
        database_ok=database_ok,
        bus=runtime.bus.describe(),
        bus_ok=bus_ok,
        modules=[module.name for module in runtime.modules],
    )


@get(
    "/ops/bus",
    tags=["ops"],
    operation_id="busCounters",
    guards=[require_ops_token],
    security=OPS_TOKEN,
    responses=errors(401, says={401: _NEEDS_TOKEN}),
)
async def bus_counters(state: State) -> BusCounters:
    runtime = _runtime(state)
    stats = runtime.bus.stats
    return BusCounters(
        published=stats.published,
        delivered=stats.delivered,
        acked=stats.acked,
        redelivered=stats.redelivered,
        dead_lettered=stats.dead_lettered,
        pending=await runtime.bus.count_pending() + runtime.relay.backlog,
    )


@get(
    "/ops/dead-letters",
    tags=["ops"],
    operation_id="deadLetters",
    guards=[require_ops_token],
    security=OPS_TOKEN,
    responses=errors(401, says={401: _NEEDS_TOKEN}),
)
async def dead_letters(state: State) -> list[DeadLetterView]:
    runtime = _runtime(state)
    return [
        DeadLetterView(
            id=dead.id,
            subject=dead.message.subject,
            group=dead.group,
            attempts=dead.attempts,
            error=dead.error,
            payload=_payload(dead.message.data),
            failed_at=dead.failed_at,
        )
        for dead in await runtime.bus.dead_letters()
    ]


class Replayed(msgspec.Struct):
    id: str
    # Every dead letter sent back to its group: the one asked for, and those of its group about
    # the same record, which waited behind it.
    replayed: list[str]
    status: str = "replayed"


@post(
    "/ops/dead-letters/{dead_letter_id:str}/replay",
    tags=["ops"],
    operation_id="replayDeadLetter",
    guards=[require_ops_token],
    security=OPS_TOKEN,
    status_code=HTTP_202_ACCEPTED,
    responses=errors(401, 404, says={401: _NEEDS_TOKEN, 404: ("No dead letter with id 3f2a…", "id")}),
    operation_class=without(400),
)
async def replay_dead_letter(state: State, dead_letter_id: FromPath[str]) -> Replayed:
    replayed = await _runtime(state).bus.replay(dead_letter_id)
    if not replayed:
        raise NotFound(f"No dead letter with id {dead_letter_id}", field="id")
    return Replayed(dead_letter_id, replayed)


def _payload(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return data.decode("utf-8", errors="replace")


routes = [health, health_head, bus_counters, dead_letters, replay_dead_letter]
