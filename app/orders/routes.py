from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.auth import CurrentUser, require_user
from app.common.body import StrictJSON
from app.common.http import parse_id
from app.orders import service
from app.orders.models import Order, TicketReplica
from app.orders.schemas import OrderInput, OrderTicketView, OrderView


def view(order: Order, ticket: TicketReplica) -> OrderView:
    return OrderView(
        id=order.id,
        user_id=order.user_id,
        status=order.status,
        expires_at=order.expires_at,
        version=order.version,
        ticket=OrderTicketView(id=ticket.id, title=ticket.title, price=float(ticket.price), version=ticket.version),
    )


class OrderController(Controller):
    path = "/api/orders"
    tags = ["orders"]
    # Guards sit on each handler, not the controller: there they would also guard the OPTIONS
    # answer Litestar adds, which a client asks without credentials.

    @post("/", guards=[require_user], dto=StrictJSON[OrderInput], return_dto=None, status_code=HTTP_201_CREATED)
    async def create(
        self, data: JSONBody[OrderInput], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> OrderView:
        return view(*await service.create_order(session, user.id, data.ticket_id))

    @get("/", guards=[require_user])
    async def list(self, session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]) -> list[OrderView]:
        return [view(order, ticket) for order, ticket in await service.list_orders(session, user.id)]

    @get("/{order_id:str}", guards=[require_user])
    async def show(
        self, order_id: FromPath[str], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> OrderView:
        return view(*await service.get_order(session, user.id, parse_id(order_id)))

    @delete("/{order_id:str}", guards=[require_user], status_code=HTTP_204_NO_CONTENT)
    async def cancel(
        self, order_id: FromPath[str], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> Response[None]:
        await service.cancel_order(session, user.id, parse_id(order_id))
        return Response(None, status_code=HTTP_204_NO_CONTENT)
