from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.common import paging
from app.common.auth import CurrentUser, require_user
from app.common.body import StrictJSON
from app.common.http import PathId, parse_id
from app.common.openapi import SIGNED_IN, errors, link, with_links
from app.orders import models, service
from app.orders.schemas import Order, OrderCreate, OrderTicket

_NEXT_STEPS = {
    "showOrder": link("showOrder", "Read the order again", {"order_id": "$response.body#/id"}),
    "cancelOrder": link("cancelOrder", "Cancel the order, releasing its ticket", {"order_id": "$response.body#/id"}),
}


def view(order: models.Order, ticket: models.TicketReplica) -> Order:
    return Order(
        id=order.id,
        user_id=order.user_id,
        status=order.status,
        expires_at=order.expires_at,
        version=order.version,
        ticket=OrderTicket(id=ticket.id, title=ticket.title, price=float(ticket.price), version=ticket.version),
    )


class OrderController(Controller):
    path = "/api/orders"
    tags = ["orders"]
    # Guards sit on each handler, not the controller: there they would also guard the OPTIONS
    # answer Litestar adds, which a client asks without credentials.

    @post(
        "/",
        operation_id="createOrder",
        guards=[require_user],
        security=SIGNED_IN,
        dto=StrictJSON[OrderCreate],
        return_dto=None,
        status_code=HTTP_201_CREATED,
        responses=errors(
            401,
            400,
            404,
            409,
            body=True,
            says={
                400: ("ticketId must be a UUID", "ticketId"),
                404: ("Ticket not found", "ticketId"),
                409: ("Ticket is already reserved", "ticketId"),
            },
        ),
        operation_class=with_links(HTTP_201_CREATED, _NEXT_STEPS),
    )
    async def create_order(
        self, data: JSONBody[OrderCreate], session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> Order:
        """Reserve a ticket for 15 minutes; the order carries the orders module's copy of it."""
        return view(*await service.create_order(session, user.id, data.ticket_id))

    @get(
        "/",
        operation_id="listOrders",
        guards=[require_user],
        security=SIGNED_IN,
        response_headers=[paging.LINK_HEADER],
        responses=errors(401, 400),
    )
    async def list_orders(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        user: NamedDependency[CurrentUser],
        limit: paging.Limit = paging.DEFAULT_LIMIT,
        cursor: paging.Cursor = None,
    ) -> Response[list[Order]]:
        """The caller's orders only, oldest first (by id)."""
        rows = await service.list_orders(session, user.id, limit=limit + 1, after=paging.after(cursor))
        orders, more = paging.page(rows, limit)
        headers = paging.next_link(request, orders[-1][0].id) if more else None
        return Response([view(order, ticket) for order, ticket in orders], headers=headers)

    @get(
        "/{order_id:str}",
        operation_id="showOrder",
        guards=[require_user],
        security=SIGNED_IN,
        responses=errors(401, 400, 404, 403, says={404: "Order not found", 403: "This order belongs to someone else"}),
        operation_class=with_links(200, {"cancelOrder": _NEXT_STEPS["cancelOrder"]}),
    )
    async def show_order(
        self, order_id: PathId, session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> Order:
        return view(*await service.get_order(session, user.id, parse_id(order_id)))

    @delete(
        "/{order_id:str}",
        operation_id="cancelOrder",
        guards=[require_user],
        security=SIGNED_IN,
        status_code=HTTP_204_NO_CONTENT,
        # 409 only for an order already complete, which no route makes yet (payments are not built).
        responses=errors(
            401,
            400,
            404,
            403,
            409,
            says={
                404: "Order not found",
                403: "This order belongs to someone else",
                409: "A completed order cannot be cancelled",
            },
        ),
    )
    async def cancel_order(
        self, order_id: PathId, session: NamedDependency[AsyncSession], user: NamedDependency[CurrentUser]
    ) -> None:
        """Cancel the order (again: still 204) and release its ticket."""
        await service.cancel_order(session, user.id, parse_id(order_id))
