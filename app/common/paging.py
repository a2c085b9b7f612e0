"""Lists that page (SPEC "Lists"): ``limit`` and ``cursor`` in; a JSON list and ``Link: <next>; rel="next"`` out.

Pages are keyset pages: a cursor holds the sort key of the last item a page showed, and the next
page starts strictly after it. Items created or removed meanwhile cannot shift the pages, so a
client that follows the links sees every item that existed when it started exactly once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request
from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import OpenAPIType
from litestar.params import QueryParameter

from app.common.errors import BadRequest
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
        description="Where the page starts: copy it from the previous page's `Link` header, never build one",
        schema_extra=never_null(OpenAPIType.STRING),
    ),
]
LINK_HEADER = ResponseHeader(
    name="Link",
    documentation_only=True,
    value="",  # only its type matters: the document shows the header as a string
    description='`<URL of the next page>; rel="next"`, present only when there is more',
)

_BAD_CURSOR = "cursor is not one this API gave out: follow the Link header of the previous page"
_key_decoder = msgspec.json.Decoder(list[str])


def encode_cursor(key: Sequence[str]) -> str:
    """The sort key of a page's last item, made opaque (URL-safe, no padding)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).rstrip(b"=").decode()


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The sort key a cursor holds, or a 400 naming ``cursor``."""
    try:
        key = _key_decoder.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad_cursor() from None
    if len(key) != size:
        raise bad_cursor()
    return key


def bad_cursor() -> BadRequest:
    """The answer to a cursor that decodes but does not hold a key of this list."""
    return BadRequest(_BAD_CURSOR, field="cursor")


def page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], bool]:
    """The first ``limit`` of ``rows`` (asked for as ``limit + 1``), and whether there are more."""
    return rows[:limit], len(rows) > limit


def next_link(request: Request[Any, Any, Any], key: Sequence[str]) -> dict[str, str]:
    """The ``Link`` header to the page after the one whose last item has sort key ``key``."""
    kept = [(name, value) for name, value in request.query_params.multi_items() if name != "cursor"]
    query = urlencode([*kept, ("cursor", encode_cursor(key))])
    return {"Link": f'<{request.url.with_replacements(query=query)}>; rel="next"'}
