"""Waiting for a condition, with a deadline: the one way anything here waits for something to happen.

The demo waits on the app it drives, the tests on the app they test; both poll a check (plain or
async) until it holds, and give up with a sentence naming what they waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


# A check that answers None while it waits gives the first answer that is not None.
@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = ..., interval: float = ..., what: str = ...
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], *, timeout: float = ..., interval: float = ..., what: str = ...
) -> T: ...


async def eventually(
    check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.005, what: str = "the condition"
) -> Any:
    """The first truthy result of ``check``; ``TimeoutError`` naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            last = "" if result is None or result is False else f" (last: {result!r})"
            raise TimeoutError(f"waited {timeout:g}s for {what}{last}")
        await asyncio.sleep(interval)
