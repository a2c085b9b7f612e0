"""The per-client brake on sign-up and sign-in: SPEC's ``TICKETING_AUTH_RATE`` attempts a minute.

Litestar's rate-limit middleware does the counting, in the app's ``sign_in_attempts`` store (in
memory: a restart forgives at most one minute of attempts, and the failure window that guards each
account is kept in the database). Only the routes marked with :data:`ATTEMPT` count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware

from app.common.errors import TooManyRequests

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.types import Receive, Scope, Send

#: ``opt`` of a route whose every call counts as an attempt: ``opt={ATTEMPT: True}``.
ATTEMPT = "counts_as_sign_in_attempt"
_STORE = "sign_in_attempts"


def client_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Who is calling, as far as throttling goes: the peer's address (uvicorn sets it from
    ``X-Forwarded-For`` only for the proxies it trusts: loopback, or ``FORWARDED_ALLOW_IPS``)."""
    return connection.client.host if connection.client else "unknown"


async def _counts(request: Request[Any, Any, Any]) -> bool:
    return bool(request.route_handler.opt.get(ATTEMPT))


class _AttemptLimit(RateLimitMiddleware):
    """Litestar's limiter, answering in SPEC's error body with ``Retry-After``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            reset = (exc.headers or {}).get(self.config.rate_limit_reset_header_key, "60")
            raise TooManyRequests(
                "Too many sign-up and sign-in attempts from this client: try again in {seconds} seconds",
                float(reset),
            ) from None


def attempts_limit(per_minute: int) -> DefineMiddleware | None:
    """The middleware for ``per_minute`` attempts per client, or None when ``0`` lifts the limit."""
    if per_minute == 0:
        return None
    config = RateLimitConfig(
        rate_limit=("minute", per_minute),
        check_throttle_handler=_counts,
        identifier_for_request=client_of,
        store=_STORE,
        middleware_class=_AttemptLimit,
    )
    return config.middleware
