"""The NATS bus's settings, read from its URL once and checked once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class NatsOptions:
    """Where the servers are, which stream, and how patiently to talk to them."""

    # nats://host:port each, credentials included: what the client connects to.
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "TICKETING"
    # Short, because it is how long the messages a dead (or paused) process held wait before the
    # group's other members get them: the lease upkeep keeps a slow handler's messages its own.
    ack_wait: float = 5.0
    batch: int = 128
    max_age: float = 0.0
    # Copies JetStream keeps of each stream (and of its consumers), on as many servers of a cluster.
    replicas: int = 1
    pull_expires: float = 5.0
    publish_timeout: float = 5.0
    connect_timeout: float = 10.0
    reconnect_wait: float = 0.5
    max_batch: int = 64
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("a NATS bus needs at least one server")
        if not STREAM_NAME.fullmatch(self.stream):
            raise ValueError(f"stream {self.stream!r}: use 1-32 letters, digits, '_' or '-'")
        for name in ("ack_wait", "pull_expires", "publish_timeout", "connect_timeout"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be > 0 seconds")
        if self.max_age < 0:
            raise ValueError("max_age must be >= 0 seconds (0 keeps everything)")
        for name in ("batch", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.replicas <= 5:
            raise ValueError("replicas must be 1 to 5 (JetStream keeps at most 5 copies)")
        # Subjects live under the stream's lower-cased name, so that streams never overlap.
        object.__setattr__(self, "prefix", self.stream.lower())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsOptions:
        """``nats://HOST:PORT`` (``nats://H1:P1,H2:P2`` for several servers), without its query."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "nats" or not parts.netloc or not parts.hostname:
            raise ValueError(f"{url!r} is not a nats://host:port URL")
        if parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a NATS URL has no path")
        credentials, _, hosts = parts.netloc.rpartition("@")
        login = f"{credentials}@" if credentials else ""
        servers = tuple(f"nats://{login}{host.strip()}" for host in hosts.split(",") if host.strip())
        return cls(servers=servers, **options)

    @property
    def shown(self) -> str:
        """The servers as logs and ``/health`` show them: without credentials."""
        return ",".join(server.replace(_login(server), "") for server in self.servers)

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}_DEAD"

    def events(self, subject: str) -> str:
        return f"{self.prefix}.events.{subject}"

    def replays(self, durable: str) -> str:
        return f"{self.prefix}.replay.{durable}"

    def dead(self, dead_letter_id: str) -> str:
        return f"{self.prefix}.dead.{dead_letter_id}"


def _login(server: str) -> str:
    netloc = server.removeprefix("nats://")
    credentials, at, _ = netloc.rpartition("@")
    return f"{credentials}{at}"
