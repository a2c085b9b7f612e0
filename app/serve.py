"""``ticketing run``: one process, or ``--workers N`` processes on one port, each a whole app.

With workers, uvicorn's supervisor starts N processes that share the listening socket, and starts
a new one when one dies. Each worker builds its app from the environment (``worker_app``), with
a runtime of its own: its own bus connection, relay and listeners. The processes share nothing
but the database and the bus, so the bus must be one they can share (not the in-memory one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from types import FrameType
from typing import Any

from litestar import Litestar

from app.settings import Settings, SettingsError

# What the parent tells its workers (they are spawned, so they read it from the environment).
_PORT = "_TICKETING_WORKER_PORT"
_LOG_LEVEL = "_TICKETING_WORKER_LOG_LEVEL"


# What may carry a secret in a log line: a token or password in a query string (the live view's
# EventSource sends the ops token as ?token=, and the access log writes whole URLs), a Bearer
# header quoted anywhere, and the app's own tokens (JWTs) wherever they turn up.
_SECRETS = (
    (re.compile(r"([?&](?:token|access_token|password|secret)=)[^&#\s\"']*", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\b(bearer\s+)[^\s\"',]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"), "[redacted]"),
)


def redacted(line: str) -> str:
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line


class _SeedFormatter(logging.Formatter):
    """INFO lines read exactly like the original's logs; anything louder says its level.

    Every line, the access log's and tracebacks included, leaves with its secrets redacted: the
    one handler of the process is the one place no logger can get around.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = redacted(super().format(record))
        return message if record.levelno == logging.INFO else f"{record.levelname}: {message}"


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_SeedFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every step at INFO; the app says what it did in one line per history.
    logging.getLogger("alembic").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Serving:
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    access_log: bool = False
    workers: int = 1


def run(serving: Serving) -> int:
    """Serve until stopped; 0, 2 for what preflight refused (one line said why), 3 for a failed start."""
    from app.main import create_app
    from app.preflight import StartupError, preflight

    configure_logging(serving.log_level)
    try:
        settings = Settings.from_env()
        _check_workers(settings, serving.workers)
        app = create_app(settings, listening_on=serving.port)
        asyncio.run(preflight(settings))
    except (SettingsError, StartupError) as exc:
        logging.getLogger("ticketing").error("%s", exc)
        return 2
    _warn_if_ops_routes_are_open(settings, serving)
    if serving.workers > 1:
        return _run_workers(serving)
    return _run_one(app, serving)


def _warn_if_ops_routes_are_open(settings: Settings, serving: Serving) -> None:
    # Open ops routes are fine on a developer's loopback; on an address others reach, anyone can
    # replay dead letters and watch every event go by.
    if settings.auth.ops_token is None and not is_loopback(serving.host):
        logging.getLogger("ticketing").warning(
            "/ops, /metrics and /demo/events are open to anyone who can reach %s:%d: set TICKETING_OPS_TOKEN "
            "to guard them",
            serving.host,
            serving.port,
        )


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``; a name other than localhost is not trusted to be."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_workers(settings: Settings, workers: int) -> None:
    if workers > 1 and settings.bus.url.lower().startswith("memory:"):
        raise SettingsError(
            f"--workers {workers} needs a bus the processes can share, such as TICKETING_BUS_URL=nats://HOST:PORT: "
            "the in-memory bus lives inside one process"
        )


def _config(app: Any, serving: Serving, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=serving.host,
        port=serving.port,
        log_config=None,
        access_log=serving.access_log,
        timeout_graceful_shutdown=10,
        **options,
    )


def _run_one(app: Litestar, serving: Serving) -> int:
    from app.live.server import Server, StartupFailed

    # uvicorn.run() with a server that also ends the live view's streams at shutdown.
    try:
        Server(_config(app, serving)).run()
    except StartupFailed:
        return 3  # uvicorn's own exit code for an app that failed to start; it has logged why
    return 0


def _run_workers(serving: Serving) -> int:
    from uvicorn.supervisors import Multiprocess

    from app.bus.metrics import MULTIPROCESS_DIR

    os.environ[_PORT] = str(serving.port)
    os.environ[_LOG_LEVEL] = serving.log_level
    with contextlib.ExitStack() as stack:
        if not os.environ.get(MULTIPROCESS_DIR):
            # The workers' metrics meet there, so that /metrics adds them up, whoever answers.
            os.environ[MULTIPROCESS_DIR] = stack.enter_context(tempfile.TemporaryDirectory(prefix="ticketing-metrics-"))
        config = _config("app.serve:worker_app", serving, factory=True, workers=serving.workers)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def worker_app() -> Litestar:
    """The app of one worker process, from the environment the parent left it."""
    from app.live import close_streams
    from app.main import create_app

    configure_logging(os.environ.get(_LOG_LEVEL, "INFO"))
    port = os.environ.get(_PORT)
    app = create_app(Settings.from_env(), listening_on=int(port) if port else None)
    # uvicorn's own Server runs a worker: end the live streams when it is told to stop, so
    # that an open /demo page does not hold the shutdown up for its whole grace period.
    app.on_startup.append(lambda: _end_streams_on_exit(app, close_streams))
    return app


def _end_streams_on_exit(app: Litestar, close: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def ending(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            close(app)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, ending)
