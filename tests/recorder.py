"""What each process's bus did, as a user watching ``/demo/events`` sees it: every publish, every delivery's fate."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import httpx
import msgspec

from app.demo.target import server_sent_events


class Recorder:
    """Reads the live streams of the processes at ``urls``, reconnecting when one goes away and comes back.

    ``streams`` per URL: a port served by several workers gives each stream to one of them, so
    more streams than workers watch every worker. Each process is heard once (the first stream
    that reached it), whatever the number of streams that did.
    """

    def __init__(self, urls: list[str], streams: int = 1, headers: dict[str, str] | None = None) -> None:
        self.urls = urls
        self.streams = streams
        self.headers = headers or {}
        self.records: list[dict[str, Any]] = []  # each with "process": the URL, "pid": the worker
        self._tasks: list[asyncio.Task[None]] = []
        self._hello: dict[str, asyncio.Event] = {url: asyncio.Event() for url in urls}
        self._listener: dict[int, int] = {}  # pid -> the stream that records it

    async def __aenter__(self) -> Recorder:
        self._tasks = [
            asyncio.create_task(self._follow(url, index * len(self.urls) + number))
            for number, url in enumerate(self.urls)
            for index in range(self.streams)
        ]
        await asyncio.wait_for(asyncio.gather(*(hello.wait() for hello in self._hello.values())), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def applied(self) -> Counter[tuple[str, str]]:
        """How often each (event, group) was applied, across every process."""
        return Counter((r["messageId"], r["group"]) for r in self.records if r["result"] == "applied")

    def published(self) -> Counter[str]:
        return Counter(r["messageId"] for r in self.records if r["result"] == "published")

    def published_by(self, process: str | int) -> set[str]:
        """What one process published: an instance by its URL, or one worker of several by its pid."""
        key = "process" if isinstance(process, str) else "pid"
        return {r["messageId"] for r in self.records if r["result"] == "published" and r[key] == process}

    async def _follow(self, url: str, stream: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection, so maybe a new worker
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(5, read=None), headers=self.headers, limits=limits
        ) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await self._read(client, url, stream)
                await asyncio.sleep(0.2)  # the process is down (or restarting): look again

    async def _read(self, client: httpx.AsyncClient, url: str, stream: int) -> None:
        pid = 0
        async with client.stream("GET", f"{url}/demo/events") as response:
            async for kind, data in server_sent_events(response):
                if kind == "hello":
                    pid = msgspec.json.decode(data)["process"]
                    self._listener.setdefault(pid, stream)
                    self._hello[url].set()
                elif kind == "bus" and data and self._listener.get(pid) == stream:
                    self.records.append(msgspec.json.decode(data) | {"process": url, "pid": pid})
