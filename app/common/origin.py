"""Cross-site writes refused at the door: a write signed in by the session cookie comes from this site.

A browser sends the session cookie with a request another site makes it send; ``SameSite=lax``
and JSON-only bodies stop most of those, and this stops the rest (a sibling subdomain is
"same site" to the browser, yet another origin). A Bearer token is never sent by a browser on
its own, so Bearer requests are not asked where they come from, and clients that are not
browsers (curl, scripts) send no ``Origin`` at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import HTTPRoute

from app.common.auth import SESSION_COOKIE
from app.common.errors import Forbidden
from app.common.http import bearer
from app.common.openapi import error

if TYPE_CHECKING:
    from litestar.openapi.datastructures import ResponseSpec
    from litestar.routes import BaseRoute
    from litestar.types import ASGIApp, Receive, Scope, Send

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_ORIGIN = "Refused: a request signed in by the session cookie must come from this site's own origin"
_MEANING = "A write signed in by the session cookie, sent from another origin"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def _origin(parts: SplitResult) -> Origin | None:
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def parse_origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` as (scheme, host, port); None for ``null`` or anything malformed."""
    return _origin(urlsplit(value.strip()))


def own_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> Origin | None:
    """The origin this request was sent to, as the server sees it.

    The scheme is the scope's: behind a TLS proxy, uvicorn has already taken it from
    ``X-Forwarded-Proto``, from the proxies ``FORWARDED_ALLOW_IPS`` trusts (loopback unless set).
    """
    scheme = connection.scope["scheme"]
    host = connection.headers.get("host")
    if host is None:
        server = connection.scope.get("server")
        if not server:
            return None
        host = f"[{server[0]}]:{server[1]}" if ":" in server[0] else f"{server[0]}:{server[1]}"
    return _origin(urlsplit(f"{scheme}://{host}"))


def signed_in_by_cookie(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the session cookie is the credential: as ``auth.current_user`` reads, a Bearer token comes first."""
    return not bearer(connection) and bool(connection.cookies.get(SESSION_COOKIE))


def is_foreign(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the request names an ``Origin`` other than its own (``null`` included)."""
    offered = connection.headers.get("origin")
    if offered is None:
        return False
    ours = own_origin(connection)
    return ours is None or parse_origin(offered) != ours


class SameOriginWrites(ASGIMiddleware):
    """403 for a POST, PUT, PATCH or DELETE signed in by the session cookie from another origin."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] in WRITES:
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            if signed_in_by_cookie(connection) and is_foreign(connection):
                raise Forbidden(CROSS_ORIGIN)
        await next_app(scope, receive, send)


class DocumentCrossOriginRefusal(ReceiveRoutePlugin):
    """Every write route's document lists the 403 :class:`SameOriginWrites` may answer with.

    Done once here rather than in each route's ``responses``, so that no write route can forget it.
    Route handlers are copies of their own in each app, so this changes no other app's document.
    """

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if handler.include_in_schema and WRITES & set(handler.http_methods):
                responses = handler.responses or {}
                handler.responses = {**responses, 403: _with_refusal(responses.get(403))}


def _with_refusal(ownership: ResponseSpec | None) -> ResponseSpec:
    refusal = error(403, CROSS_ORIGIN)
    refusal.description = _MEANING
    if ownership is None:
        return refusal
    # The route's own 403 (not the owner) stays; the document says it may also mean this.
    refusal.description = f"{ownership.description}; or: {_MEANING[0].lower()}{_MEANING[1:]}"
    refusal.examples = [*(ownership.examples or []), *(refusal.examples or [])]
    return refusal
