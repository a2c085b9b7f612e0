from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from app.common import paging
from app.common.auth import CurrentUser, require_user
from app.common.body import StrictJSON
from app.common.http import PathId, etag, parse_flag, parse_id
from app.common.openapi import SIGNED_IN, errors, link, never_null, with_links
from app.tickets import models, service
from app.tickets.schemas import Ticket, TicketCreate, TicketUpdate

ETAG = ResponseHeader(
    name="ETag",
    documentation_only=True,
    value='"0"',
    required=True,
    description='The ticket\'s version, quoted: `"3"`',
)
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description='Save only if the ticket is still at this version: its ETag, `"3"` (or `*`)',
        schema_extra=never_null(OpenAPIType.STRING),
    ),
]
# Read as text and judged by parse_flag: Litestar would also take "1", "yes" and "null".
Available = Annotated[
    str | None,
    QueryParameter(
        name="available",
        description="true: only tickets no order holds; false: only those an order holds",
        schema_extra=never_null(OpenAPIType.BOOLEAN),
    ),
]

_NEXT_STEPS = {
    "showTicket": link("showTicket", "Read the ticket again", {"ticket_id": "$response.body#/id"}),
    "updateTicket": link(
        "updateTicket",
        "Edit the ticket, if nobody saved it meanwhile",
        {"ticket_id": "$response.body#/id", "header.If-Match": "$response.header.ETag"},
    ),
}


def view(ticket: models.Ticket) -> Ticket:
    return Ticket(
        id=ticket.id,
        title=ticket.title,
        price=float(ticket.price),
        user_id=ticket.user_id,
        order_id=ticket.order_id,
        version=ticket.version,
    )


def _with_etag(ticket: models.Ticket, status_code: int) -> Response[Ticket]:
    return Response(view(ticket), status_code=status_code, headers={"ETag": etag(ticket.version)})


class TicketController(Controller):
    path = "/api/tickets"
    tags = ["tickets"]

    @post(
        "/",
        operation_id="createTicket",
        guards=[require_user],
        security=SIGNED_IN,
        dto=StrictJSON[TicketCreate],
        return_dto=None,
        status_code=HTTP_201_CREATED,
        response_headers=[ETAG],
        responses=errors(401, 400, body=True),
        operation_class=with_links(HTTP_201_CREATED, _NEXT_STEPS),
    )
    async def create_ticket(
        self, data: JSONBody[TicketCreate], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> Response[Ticket]:
        ticket = await service.create_ticket(session, user.id, data.title, data.price)
        return _with_etag(ticket, HTTP_201_CREATED)

    @get(
        "/",
        operation_id="listTickets",
        response_headers=[paging.LINK_HEADER],
        responses=errors(400, says={400: ("limit must be an integer <= 1000", "limit")}),
    )
    async def list_tickets(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        limit: paging.Limit = paging.DEFAULT_LIMIT,
        cursor: paging.Cursor = None,
        available: Available = None,
    ) -> Response[list[Ticket]]:
        rows = await service.list_tickets(
            session, limit=limit + 1, after=paging.after(cursor), available=parse_flag(available, "available")
        )
        tickets, more = paging.page(rows, limit)
        headers = paging.next_link(request, tickets[-1].id) if more else None
        return Response([view(ticket) for ticket in tickets], headers=headers)

    @get(
        "/{ticket_id:str}",
        operation_id="showTicket",
        response_headers=[ETAG],
        responses=errors(400, 404, says={400: ("id must be a UUID", "id")}),
        operation_class=with_links(HTTP_200_OK, {"updateTicket": _NEXT_STEPS["updateTicket"]}),
    )
    async def show_ticket(self, ticket_id: PathId, session: NamedDependency[AsyncSession]) -> Response[Ticket]:
        ticket = await service.get_ticket(session, parse_id(ticket_id))
        return _with_etag(ticket, HTTP_200_OK)

    @put(
        "/{ticket_id:str}",
        operation_id="updateTicket",
        guards=[require_user],
        security=SIGNED_IN,
        dto=StrictJSON[TicketUpdate],
        return_dto=None,
        response_headers=[ETAG],
        responses=errors(
            401,
            400,
            404,
            403,
            409,
            412,
            body=True,
            says={409: "Cannot edit a reserved ticket"},
        ),
        operation_class=with_links(HTTP_200_OK, {"updateTicket": _NEXT_STEPS["updateTicket"]}),
    )
    async def update_ticket(
        self,
        ticket_id: PathId,
        data: JSONBody[TicketUpdate],
        session: NamedDependency[AsyncSession],
        user: NamedDependency[CurrentUser],
        if_match: IfMatch = None,
    ) -> Response[Ticket]:
        ticket = await service.update_ticket(
            session,
            ticket_id=parse_id(ticket_id),
            user_id=user.id,
            title=data.title,
            price=data.price,
            if_match=if_match,
        )
        return _with_etag(ticket, HTTP_200_OK)
