"""The one check of ``TICKETING_OPS_TOKEN``, for ``/ops``, ``/metrics`` and the live stream.

Each route says in its own words what it needs; how the token is compared is the same for all,
so that a fix to one (constant-time comparison, say) is a fix to every one.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from app.common.errors import Unauthorized
from app.common.http import bearer


def accepts(offered: str | None, expected: str) -> bool:
    # compare_digest takes as long whatever the first wrong character: timing tells nothing.
    return offered is not None and hmac.compare_digest(offered.encode(), expected.encode())


def ops_token_guard(refusal: str, *, query: str | None = None) -> Guard:
    """A guard: 401 saying ``refusal`` unless the request offers the ops token, when one is set.

    The token comes as ``Authorization: Bearer``, or, when ``query`` names a parameter, in the
    query string too (a browser's EventSource cannot send headers).
    """

    async def require_ops_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        expected: str | None = connection.app.state.settings.auth.ops_token
        if expected is None:
            return
        offered = bearer(connection)
        if offered is None and query is not None:
            offered = connection.query_params.get(query)
        if not accepts(offered, expected):
            raise Unauthorized(refusal)

    return require_ops_token
