"""How routes describe themselves in ``/schema/openapi.json``: errors, credentials and links.

A route names the statuses it can answer besides its success (``responses=errors(400, 404)``);
what each one means, and SPEC's error body for all of them, come from the one table below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Example,
    Link,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    SecurityRequirement,
    SecurityScheme,
)

from app.common.auth import SESSION_COOKIE
from app.common.body import JSON_ONLY
from app.common.errors import ErrorBody

BEARER = "bearer"
COOKIE = "sessionCookie"
OPS = "opsToken"

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    BEARER: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="The token that signup and signin answer with: `Authorization: Bearer <token>`.",
    ),
    COOKIE: SecurityScheme(
        type="apiKey",
        name=SESSION_COOKIE,
        security_scheme_in="cookie",
        description="The session cookie that signup and signin set; it holds the same token.",
    ),
    OPS: SecurityScheme(
        type="http",
        scheme="bearer",
        description="`Authorization: Bearer $TICKETING_OPS_TOKEN`; asked for only when that variable is set.",
    ),
}
COMPONENTS = Components(security_schemes=dict(SECURITY_SCHEMES))

#: Either credential works on a route that needs a signed-in user.
SIGNED_IN: list[SecurityRequirement] = [{BEARER: []}, {COOKIE: []}]
#: Credentials are read when present, and nobody is refused for lacking them.
OPTIONALLY_SIGNED_IN: list[SecurityRequirement] = [{}, {BEARER: []}, {COOKIE: []}]
OPS_TOKEN: list[SecurityRequirement] = [{OPS: []}]


class _Meaning(NamedTuple):
    description: str
    example: str
    field: str | None = None


_ERRORS: dict[int, _Meaning] = {
    400: _Meaning(
        "Invalid input; `field` names the one at fault, if one is", "title must be 1 to 200 characters", "title"
    ),
    401: _Meaning("No valid Bearer token or session cookie", "Not authorized: sign in, or send a valid Bearer token"),
    403: _Meaning("Signed in, but not as the owner", "Only the owner can edit this ticket"),
    404: _Meaning("No such record", "Ticket not found"),
    409: _Meaning("The record's state forbids it", "Cannot edit a reserved ticket"),
    412: _Meaning("`If-Match` names another version", 'If-Match "1" does not match the current version "4"'),
    413: _Meaning("The body is larger than 64 KiB", "Request body is too large"),
    415: _Meaning("The body is not `Content-Type: application/json`", JSON_ONLY),
    429: _Meaning(
        "Too many attempts: `Retry-After` says in how many seconds to try again",
        "Too many sign-up and sign-in attempts from this client: try again in 42 seconds",
    ),
}
#: Every route that reads a body can also answer these.
BODY_ERRORS = (413, 415)


def _example(message: str, field: str | None) -> Example:
    detail = {"message": message} if field is None else {"message": message, "field": field}
    return Example(summary=message, value={"errors": [detail]})


#: What a route says with a status: a message, or a message and the field it names.
Says = str | tuple[str, str]


def error(status: int, says: Says | None = None) -> ResponseSpec:
    """SPEC's error body for ``status``; the example is what the route ``says``, if it tells."""
    meaning = _ERRORS[status]
    message, field = (says, None) if isinstance(says, str) else says or (meaning.example, meaning.field)
    return ResponseSpec(
        ErrorBody,
        description=meaning.description,
        examples=[_example(message, field)],
        generate_examples=False,
    )


def errors(*statuses: int, body: bool = False, says: Mapping[int, Says] | None = None) -> dict[int, ResponseSpec]:
    """The error answers of a route: ``statuses``, and 413 and 415 if it reads a ``body``.

    ``says`` gives, by status, a message the route really answers with, for the example.
    """
    listed = (*statuses, *BODY_ERRORS) if body else statuses
    told = says or {}
    return {status: error(status, told.get(status)) for status in listed}


def never_null(kind: OpenAPIType) -> dict[str, Any]:
    """``schema_extra`` for ``X | None = None`` when None means left out: the wire never carries null.

    Litestar would describe ``X | None`` as "X or null"; the document then says ``kind`` alone.
    """
    return {"one_of": None, "type": kind}


def with_links(status: int, links: Mapping[str, Link]) -> type[Operation]:
    """For ``operation_class=``: the ``status`` answer links to the operations a client calls next."""

    @dataclass
    class Linked(Operation):
        # A dataclass of its own: only then does the generated __init__ call __post_init__.
        def __post_init__(self) -> None:
            response = (self.responses or {}).get(str(status))
            if isinstance(response, OpenAPIResponse):
                response.links = dict(links)

    return Linked


def without(*statuses: int) -> type[Operation]:
    """For ``operation_class=``: drop answers Litestar documents but the route never gives.

    Litestar adds its own 400 to any route with a parameter, even one any string satisfies.
    """

    @dataclass
    class Pruned(Operation):
        def __post_init__(self) -> None:
            for status in statuses:
                (self.responses or {}).pop(str(status), None)

    return Pruned


def link(
    operation_id: str, description: str, parameters: Mapping[str, str] | None = None, request_body: Any = None
) -> Link:
    """``parameters`` and ``request_body`` take runtime expressions, e.g. ``{"ticket_id": "$response.body#/id"}``."""
    return Link(
        operation_id=operation_id,
        description=description,
        parameters=dict(parameters) if parameters else None,
        request_body=request_body,
    )
