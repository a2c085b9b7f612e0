"""Small HTTP helpers shared by the modules: ids in paths, ETags and If-Match."""

from __future__ import annotations

import uuid

from app.common.errors import BadRequest


def parse_id(value: str, field: str = "id") -> str:
    """The canonical form of a UUID from a path or body, or a 400 naming the field."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"{field} must be a UUID", field=field) from None


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_allows(header: str, version: int) -> bool:
    """Whether an ``If-Match`` header admits the current version (RFC 9110: strong comparison)."""
    candidates = [tag.strip() for tag in header.split(",")]
    return "*" in candidates or etag(version) in candidates
