from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.auth import CurrentUser, require_user
from app.common.body import StrictJSON
from app.common.http import etag, parse_id
from app.tickets import service
from app.tickets.models import Ticket
from app.tickets.schemas import TicketInput, TicketView


def view(ticket: Ticket) -> TicketView:
    return TicketView(
        id=ticket.id,
        title=ticket.title,
        price=float(ticket.price),
        user_id=ticket.user_id,
        order_id=ticket.order_id,
        version=ticket.version,
    )


def _with_etag(ticket: Ticket, status_code: int) -> Response[TicketView]:
    return Response(view(ticket), status_code=status_code, headers={"ETag": etag(ticket.version)})


class TicketController(Controller):
    path = "/api/tickets"
    tags = ["tickets"]

    @post("/", guards=[require_user], dto=StrictJSON[TicketInput], return_dto=None, status_code=HTTP_201_CREATED)
    async def create(
        self, data: JSONBody[TicketInput], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> Response[TicketView]:
        ticket = await service.create_ticket(session, user.id, data.title, data.price)
        return _with_etag(ticket, HTTP_201_CREATED)

    @get("/")
    async def list(self, session: NamedDependency[AsyncSession]) -> list[TicketView]:
        return [view(ticket) for ticket in await service.list_tickets(session)]

    @get("/{ticket_id:str}")
    async def show(self, ticket_id: FromPath[str], session: NamedDependency[AsyncSession]) -> Response[TicketView]:
        ticket = await service.get_ticket(session, parse_id(ticket_id))
        return _with_etag(ticket, HTTP_200_OK)

    @put("/{ticket_id:str}", guards=[require_user], dto=StrictJSON[TicketInput], return_dto=None)
    async def update(
        self,
        ticket_id: FromPath[str],
        data: JSONBody[TicketInput],
        session: NamedDependency[AsyncSession],
        user: NamedDependency[CurrentUser],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[TicketView]:
        ticket = await service.update_ticket(
            session,
            ticket_id=parse_id(ticket_id),
            user_id=user.id,
            title=data.title,
            price=data.price,
            if_match=if_match,
        )
        return _with_etag(ticket, HTTP_200_OK)
