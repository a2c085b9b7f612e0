"""The one place where settings, database, bus and modules are wired into a Litestar app."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app import asyncapi, live, metrics, ops, tracing
from app.common import openapi
from app.common.auth import provide_user
from app.common.body import DecimalAsNumber, JSONBodiesOnly
from app.common.errors import exception_handlers
from app.common.headers import door_headers
from app.common.origin import DocumentCrossOriginRefusal, SameOriginWrites
from app.common.throttle import attempts_limit
from app.runtime import Runtime, load_module, provide_session
from app.settings import Settings

log = logging.getLogger("ticketing")
# RFC 7518 asks HS256 keys to be at least as long as the hash: 32 bytes.
MIN_SECRET_BYTES = 32


def create_app(settings: Settings | None = None, *, listening_on: int | None = None) -> Litestar:
    """The app for ``settings`` (default: from the environment); nothing connects until it starts."""
    settings = settings or Settings.from_env()
    if settings.auth.generated_secret:
        log.warning(
            "TICKETING_JWT_SECRET is not set: using a random key, so sign-ins end at restart "
            "and other processes will not accept this one's tokens"
        )
    elif len(settings.auth.jwt_secret.encode()) < MIN_SECRET_BYTES:
        log.warning(
            "TICKETING_JWT_SECRET is shorter than %d bytes: tokens signed with it are easier to forge",
            MIN_SECRET_BYTES,
        )
    modules = [load_module(name) for name in settings.modules]
    runtime = Runtime(settings, modules, listening_on)
    plugins: list[Any] = [DecimalAsNumber(), DocumentCrossOriginRefusal()]
    if settings.tracing.enabled:
        tracing.configure(settings.tracing)
        plugins.append(tracing.http_plugin())
    return Litestar(
        route_handlers=[
            *(route for module in modules for route in module.routes),
            *ops.routes,
            *live.routes,
            *asyncapi.routes,
            *metrics.routes,
        ],
        lifespan=[runtime.lifespan],
        dependencies={"session": Provide(provide_session), "user": Provide(provide_user)},
        exception_handlers=exception_handlers,
        plugins=plugins,
        openapi_config=OpenAPIConfig(
            title="ticketing",
            version="0.1.0",
            description="Tickets and orders kept consistent by versioned events.",
            components=openapi.COMPONENTS,
            use_handler_docstrings=True,
        ),
        middleware=[
            metrics.http_metrics().middleware,
            SameOriginWrites(),
            JSONBodiesOnly(),
            *filter(None, [attempts_limit(settings.auth.attempts_per_minute)]),
        ],
        before_send=[door_headers(cookie_secure=settings.auth.cookie_secure)],
        state=State({"settings": settings, "runtime": runtime, "tokens": runtime.tokens}),
        # Logging is the process's business (``ticketing run`` sets it up), not the app's.
        logging_config=None,
        request_max_body_size=64 * 1024,
        debug=False,
    )
