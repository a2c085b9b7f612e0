"""``/demo``: a page that shows events as they flow, fed by Server-Sent Events from ``/demo/events``."""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING

import msgspec
from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.common.errors import NotFound
from app.common.ops_token import ops_token_guard
from app.live.feed import Feed

if TYPE_CHECKING:
    from app.runtime import Runtime

# How long a quiet stream waits before it sends a comment: proxies keep the connection open,
# and a client that went away without a word is noticed at the next write.
HEARTBEAT = 15.0
# Records one client may fall behind by before the oldest are dropped.
QUEUE_LIMIT = 500
# Milliseconds the browser waits before it reconnects a dropped stream.
RECONNECT_MS = 1000

_STATIC = {
    "demo.js": "text/javascript",
    "demo.css": "text/css",
}


class Streams:
    """The open feeds of one app, so that shutdown can end them (see :func:`close_streams`)."""

    def __init__(self) -> None:
        self.feeds: set[Feed] = set()
        self.closing = False

    def close(self) -> None:
        self.closing = True
        for feed in list(self.feeds):
            feed.close()


# Keyed by the app's Runtime, so that several apps in one process keep their streams apart
# and an app that is gone takes its entry with it.
_streams: weakref.WeakKeyDictionary[Runtime, Streams] = weakref.WeakKeyDictionary()


def streams_of(runtime: Runtime) -> Streams:
    streams = _streams.get(runtime)
    if streams is None:
        streams = _streams[runtime] = Streams()
    return streams


def close_streams(app: Litestar) -> None:
    """End every live stream of ``app`` now, so that a graceful shutdown need not wait for them.

    The server calls this when it starts shutting down (see :mod:`app.live.server`): an event
    stream never finishes on its own, and the server waits for open responses before it stops.
    """
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None:
        streams_of(runtime).close()


@functools.cache
def _asset(name: str) -> bytes:
    # Read on first request, not at import: importing the app touches no files.
    return resources.files("app.live").joinpath("static", name).read_bytes()


# Like the ops routes: guarded by TICKETING_OPS_TOKEN when it is set. A browser's EventSource
# cannot send headers, so the token may also come as ``?token=`` (the logs never show it).
require_stream_token = ops_token_guard(
    "Not authorized: /demo/events needs the ops token (Bearer header or ?token=)", query="token"
)


@get("/demo", tags=["demo"], include_in_schema=False, media_type=MediaType.HTML)
async def page() -> Response[bytes]:
    return Response(_asset("demo.html"), media_type=MediaType.HTML)


@get("/demo/{name:str}", tags=["demo"], include_in_schema=False)
async def asset(name: FromPath[str]) -> Response[bytes]:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise NotFound(f"No demo asset {name}")
    return Response(_asset(name), media_type=media_type)


class Hello(msgspec.Struct, rename="camel"):
    bus: str
    modules: list[str]
    # Which process this stream watches: with ``ticketing run --workers N`` each has a bus of its own.
    process: int


async def _stream(runtime: Runtime, streams: Streams) -> AsyncIterator[ServerSentEventMessage]:
    # The feed connects here, in the generator, so that its ``finally`` always disconnects it:
    # a response that never starts never connects.
    feed = Feed(runtime.bus, limit=QUEUE_LIMIT).connect()
    streams.feeds.add(feed)
    try:
        if streams.closing:
            feed.close()
        modules = [module.name for module in runtime.modules]
        hello = Hello(bus=runtime.bus.describe(), modules=modules, process=os.getpid())
        yield ServerSentEventMessage(event="hello", data=msgspec.json.encode(hello).decode(), retry=RECONNECT_MS)
        reported = 0
        while True:
            try:
                event = await asyncio.wait_for(feed.get(), HEARTBEAT)
            except TimeoutError:
                yield ServerSentEventMessage(comment="still here")
                continue
            if event is None:
                yield ServerSentEventMessage(event="bye", data="the server is shutting down")
                return
            if feed.dropped > reported:
                yield ServerSentEventMessage(event="gap", data=str(feed.dropped - reported))
                reported = feed.dropped
            yield ServerSentEventMessage(event="bus", data=msgspec.json.encode(event).decode())
    finally:
        # Also runs when the client goes away: the response task is cancelled mid-await.
        feed.disconnect()
        streams.feeds.discard(feed)


@get("/demo/events", tags=["demo"], guards=[require_stream_token], include_in_schema=False)
async def events(state: State) -> ServerSentEvent:
    """Every event published and every delivery finished on this app's bus, as they happen."""
    runtime: Runtime = state.runtime
    return ServerSentEvent(_stream(runtime, streams_of(runtime)))


routes = [page, asset, events]
