"""Orders expire 15 minutes after creation: the order is cancelled and its ticket released.

The original course had a separate expiration service for this; here it is the orders module's
own background worker. It sleeps until the next order is due (checking at least every
``RECHECK`` seconds, for orders that other processes sharing the database create), then cancels
each expired order exactly as its owner's DELETE would, ``order:cancelled`` included.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.orders import service

log = logging.getLogger("ticketing.orders")

RECHECK = 30.0
_RETRY_AFTER_ERROR = 5.0


async def expire_due_orders(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Cancel every order whose time is up; returns how many were cancelled."""
    cancelled = 0
    now = utcnow()
    while True:
        async with sessions() as session:
            due = await service.expired_orders(session, now)
        for order_id in due:
            async with sessions() as session:
                if await service.expire_order(session, order_id, now):
                    cancelled += 1
                    log.info("[orders] Order %s expired: cancelled, its ticket released", order_id)
        if len(due) < 100:
            return cancelled


async def expire_orders(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The worker: expire what is due, then sleep until the next order is."""
    while True:
        try:
            await expire_due_orders(sessions)
            async with sessions() as session:
                earliest = await service.next_expiry(session)
            wait = RECHECK if earliest is None else (earliest - utcnow()).total_seconds()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[orders] Expiring orders failed; trying again in %.0fs", _RETRY_AFTER_ERROR)
            wait = _RETRY_AFTER_ERROR
        await asyncio.sleep(min(max(wait, 0.0), RECHECK))
