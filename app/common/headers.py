"""Headers every answer leaves with (SPEC, "The door"), added as the answer starts.

A ``before_send`` hook rather than a middleware: Litestar runs middleware only for a route it
found, and a 404 or 405 must carry these headers too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.datastructures import Headers, MutableScopeHeaders

from app.common.auth import SESSION_COOKIE

if TYPE_CHECKING:
    from litestar.types import BeforeMessageSendHookHandler, Message, Scope

# Paths whose every answer is about the caller's own account or orders (or says that nobody is
# signed in, which a shared cache must not hand to the next caller either).
PRIVATE_PATHS = ("/api/users/", "/api/orders")
DEMO = "/demo"
# The live view loads its own script and style and opens its stream and API calls on its own
# origin: 'self' is all it needs. Nothing may frame it (clickjacking its buttons).
DEMO_POLICY = "default-src 'self'; base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors 'none'"


def _private(path: str, request: Headers, answer: MutableScopeHeaders) -> bool:
    """Whether an answer may carry a token or the caller's own data."""
    cookies = (part.strip() for part in request.get("cookie", "").split(";"))
    carried_credentials = "authorization" in request or any(part.startswith(f"{SESSION_COOKIE}=") for part in cookies)
    return carried_credentials or path.startswith(PRIVATE_PATHS) or "set-cookie" in answer


def _secure_session_cookies(answer: MutableScopeHeaders) -> None:
    # Here, once, rather than in each route that sets the cookie: sign-out's clearing cookie is
    # declared when the routes are imported, before any setting is read, and no route can forget it.
    cookies = answer.getall("set-cookie", [])
    if not any(cookie.startswith(f"{SESSION_COOKIE}=") for cookie in cookies):
        return
    del answer["set-cookie"]
    for cookie in cookies:
        session = cookie.startswith(f"{SESSION_COOKIE}=")
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        answer.add("set-cookie", f"{cookie}; Secure" if session and "secure" not in attributes else cookie)


def door_headers(*, cookie_secure: bool) -> BeforeMessageSendHookHandler:
    """The hook for ``before_send``; ``cookie_secure`` is ``TICKETING_COOKIE_SECURE``."""

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        answer = MutableScopeHeaders.from_message(message)
        path: str = scope["path"]
        # Browsers would otherwise guess a type from the body: JSON read as HTML runs scripts.
        answer["x-content-type-options"] = "nosniff"
        if "cache-control" not in answer and _private(path, Headers.from_scope(scope), answer):
            answer["cache-control"] = "no-store"
        if path == DEMO or path.startswith(f"{DEMO}/"):
            answer["x-frame-options"] = "DENY"
            answer["content-security-policy"] = DEMO_POLICY
            # /demo?token=… must not travel on as a Referer.
            answer["referrer-policy"] = "no-referrer"
        if cookie_secure:
            _secure_session_cookies(answer)

    return add_headers
