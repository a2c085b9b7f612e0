"""Lists that page (SPEC "Lists"): ``limit`` and ``cursor`` in; a JSON list and ``Link: <next>; rel="next"`` out.

Pages are keyset pages, in id order: a cursor is the id of the last item a page showed, and the
next page starts strictly after it. Items created or removed meanwhile cannot shift the pages, so
a client that follows the links sees every item that existed when it started exactly once. New
ids are UUIDv7 (app.common.ids), so id order is creation order and new items come last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from litestar import Request
from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import OpenAPIType
from litestar.params import QueryParameter

from app.common.http import parse_id
from app.common.openapi import never_null

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Limit = Annotated[
    int,
    QueryParameter(name="limit", ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}"),
]
Cursor = Annotated[
    str | None,
    QueryParameter(
        name="cursor",
        description="The page starts after this id: the `Link` header of the previous page names it",
        format="uuid",
        schema_extra=never_null(OpenAPIType.STRING),
    ),
]
LINK_HEADER = ResponseHeader(
    name="Link",
    documentation_only=True,
    value="",  # only its type matters: the document shows the header as a string
    description='`<URL of the next page>; rel="next"`, present only when there is more',
)


def after(cursor: str | None) -> str | None:
    """The id a page starts after, or a 400 naming ``cursor``."""
    return None if cursor is None else parse_id(cursor, field="cursor")


def page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], bool]:
    """The first ``limit`` of ``rows`` (asked for as ``limit + 1``), and whether there are more."""
    return rows[:limit], len(rows) > limit


def next_link(request: Request[Any, Any, Any], last_id: str) -> dict[str, str]:
    """The ``Link`` header to the page after the one whose last item is ``last_id``."""
    kept = [(name, value) for name, value in request.query_params.multi_items() if name != "cursor"]
    query = urlencode([*kept, ("cursor", last_id)])
    return {"Link": f'<{request.url.with_replacements(query=query)}>; rel="next"'}
