"""Small HTTP helpers shared by the modules: ids in paths, ETags and If-Match, Bearer credentials."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar.connection import ASGIConnection
from litestar.params import KwargDefinition, PathParameter

from app.common.errors import BadRequest

#: A record's id in a path; anything but a UUID answers 400.
PathId = Annotated[str, PathParameter(description="The record's id, a UUID", format="uuid")]
#: A record's id in an answer (for the document: msgspec ignores the annotation).
Id = Annotated[str, KwargDefinition(format="uuid")]


def canonical_id(value: str) -> str | None:
    """The canonical form of a UUID, or None when ``value`` is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def parse_id(value: str, field: str = "id") -> str:
    """The canonical form of a UUID from a path or body, or a 400 naming the field."""
    canonical = canonical_id(value)
    if canonical is None:
        raise BadRequest(f"{field} must be a UUID", field=field)
    return canonical


def parse_flag(value: str | None, field: str) -> bool | None:
    """``true`` or ``false`` from a query, None when absent, else a 400 naming the field.

    Stricter than Litestar's own booleans, which also take "1", "yes" and "null".
    """
    if value is None:
        return None
    if value not in {"true", "false"}:
        raise BadRequest(f"{field} must be true or false", field=field)
    return value == "true"


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_allows(header: str, version: int) -> bool:
    """Whether an ``If-Match`` header admits the current version (RFC 9110: strong comparison)."""
    candidates = [tag.strip() for tag in header.split(",")]
    return "*" in candidates or etag(version) in candidates


def bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header, or None when there is none."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None
