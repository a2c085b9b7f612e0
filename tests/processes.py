"""Running ``ticketing run`` as a real process, as a user would, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from app.settings import KNOWN_MODULES, parse_modules
from app.waiting import eventually

#: Every port handed out in this test run: the kernel may offer a port again once its probe is closed,
#: and two servers told the same port leave one of them answered by the other.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never the same twice in one test run."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class AppProcess:
    """``python -m app run`` on a free port; its output is collected line by line."""

    def __init__(self, env: Mapping[str, str], cwd: Path, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.cwd = cwd
        self.port = port or free_port()
        self.args = list(args)  # more of `ticketing run`'s options: --workers 2, say
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> AppProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "run",
            "--port",
            str(self.port),
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        await eventually(self._healthy, timeout=timeout, interval=0.05, what=f"{self.url}/health")
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def _healthy(self) -> bool:
        if self.process is not None and self.process.returncode is not None:
            output = "\n".join(self.lines)
            raise AssertionError(f"the app exited with {self.process.returncode}:\n{output}")
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{self.url}/health", timeout=2)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        # Another server on this port (one started elsewhere) would answer too: its modules give it away.
        modules = set(response.json()["modules"])
        wanted = set(parse_modules(self.env.get("TICKETING_MODULES") or ",".join(KNOWN_MODULES)))
        if modules != wanted:
            raise AssertionError(f"{self.url} is answered by a process running {sorted(modules)}, not this one")
        return True

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a process manager would send; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        await self._finish_reading()
        return code

    async def kill(self) -> int:
        """SIGKILL: no shutdown, no goodbye, as when the machine loses the process."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        code = await self.process.wait()
        await self._finish_reading()
        return code

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing, as a stalled VM or a debugger would."""
        assert self.process is not None and self.process.returncode is None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)

    async def _finish_reading(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5)

    def workers(self) -> list[int]:
        """The worker processes of ``--workers N`` (children of this one that serve), by pid."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children if "spawn_main" in _cmdline(int(child))]

    def output(self) -> str:
        return "\n".join(self.lines)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
