"""orders: orders for tickets, and this module's own copy of every ticket."""

from app.common.module import Module
from app.orders.events import PUBLISHES
from app.orders.expiry import expire_orders
from app.orders.listeners import listeners
from app.orders.models import Base, revoked_tokens
from app.orders.routes import OrderController

module = Module(
    name="orders",
    metadata=Base.metadata,
    routes=[OrderController],
    listeners=listeners,
    workers=[expire_orders],
    publishes=PUBLISHES,
    revoked_tokens=revoked_tokens,
)
