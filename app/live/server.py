"""Serving the app with uvicorn so that open event streams never hold up a graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from litestar import Litestar

from app.live.routes import close_streams


class StartupFailed(RuntimeError):
    """The app did not start (uvicorn has logged why)."""


class Server(uvicorn.Server):
    """uvicorn's server, which ends the app's live streams as soon as it starts shutting down.

    uvicorn waits for every open response to finish before it tells the app to stop, and an
    event stream never finishes by itself: without this, SIGTERM would wait out the whole
    graceful-shutdown timeout whenever a /demo page is open.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn calls sys.exit() when the app's start-up fails; inside a task that would
        # escape the event loop, so it becomes an ordinary exception here.
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            raise StartupFailed(f"the app did not start (exit code {exc.code})") from None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, Litestar):
            close_streams(self.config.app)
        await super().shutdown(sockets)


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound socket; port 0 picks a free one, with no window in which another process takes it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
    # says TCP, and with Nagle on every small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextlib.asynccontextmanager
async def serving(app: Litestar, sock: socket.socket, *, start_timeout: float = 30.0) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` in the running event loop; yields the base URL once it is up."""
    server = Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        async with asyncio.timeout(start_timeout):
            while not server.started:
                if task.done():
                    await task  # raises StartupFailed, or whatever else stopped it
                    raise StartupFailed("the server stopped before it started")
                await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        if not task.done():
            server.should_exit = True
            await task
