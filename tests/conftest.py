"""Fixtures that start real processes (memcached servers, the proxy) and fault servers.

Every server listens on a free loopback port and is killed after the test, even
when the test fails. The proxy is started through its real command line
(`python -m mcrouter_trio`), so the tests exercise what a user runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {process.args!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s: {process.args!r}")


def wait_for_log(
    path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {process.args!r}")
        time.sleep(0.02)
    raise RuntimeError(f"{text!r} not in {path} after {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@attrs.define
class Memcached:
    port: int
    process: subprocess.Popen[bytes]
    extra_args: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.process)

    def restart(self) -> None:
        """Stop and start again on the same port: an empty (cold) cache."""
        self.stop()
        self.process = _spawn_memcached(self.port, self.extra_args)
        wait_for_port(self.port, self.process)


def _spawn_memcached(port: int, extra_args: Sequence[str]) -> subprocess.Popen[bytes]:
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("memcached is not installed: apt-get install -y memcached")
    user = ["-u", "root"] if os.geteuid() == 0 else []
    command = [binary, *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0", *extra_args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def memcached_factory() -> Iterator[Any]:
    started: list[Memcached] = []

    def start(*extra_args: str) -> Memcached:
        port = free_port()
        server = Memcached(port, _spawn_memcached(port, extra_args), tuple(extra_args))
        started.append(server)
        wait_for_port(port, server.process)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def memcached(memcached_factory: Any) -> Memcached:
    server: Memcached = memcached_factory()
    return server


@attrs.define
class Proxy:
    #: The plain-text port, or the TLS port for a proxy started with `plain=False`.
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ssl_port: int | None = None

    @property
    def tls_port(self) -> int:
        assert self.ssl_port is not None, "the proxy was started without tls=True"
        return self.ssl_port

    def stop(self) -> int:
        _stop(self.process)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Proxy] = []

    def start(
        config: dict[str, Any] | str, *extra_args: str, plain: bool = True, tls: bool = False
    ) -> Proxy:
        """Start a proxy; `tls` adds an --ssl-port (the TLS flags go in `extra_args`)."""
        port = free_port()
        ssl_port = None
        while tls and ssl_port in (None, port):
            ssl_port = free_port()
        text = config if isinstance(config, str) else json.dumps(config)
        config_path = tmp_path / f"config-{port}.json"
        config_path.write_text(text)
        log_path = tmp_path / f"proxy-{port}.log"
        ports = ["-p", str(port)] if plain else []
        if ssl_port is not None:
            ports += ["--ssl-port", str(ssl_port)]
        command = [
            sys.executable, "-m", "mcrouter_trio", *ports,
            "--listen-addresses", "127.0.0.1", "-f", str(config_path), "-L", str(log_path),
            *extra_args,
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proxy = Proxy(port if plain or ssl_port is None else ssl_port, process, log_path, ssl_port)
        started.append(proxy)
        if plain:
            wait_for_port(port, process)
        if ssl_port is not None:
            # Not wait_for_port: a probe connection would be logged as a refused handshake.
            wait_for_log(log_path, f"listening on 127.0.0.1 port {ssl_port} (TLS)", process)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


def pool_config(*servers: str, route: str = "PoolRoute|A", **pool: Any) -> dict[str, Any]:
    """A one-pool config: `{"pools": {"A": {"servers": [...]}}, "route": route}`."""
    return {"pools": {"A": {"servers": list(servers), **pool}}, "route": route}


class Client:
    """A raw-socket client that reads exactly what the server sends."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, terminator: bytes) -> bytes:
        while terminator not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += chunk
        end = self.buffer.index(terminator) + len(terminator)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def read_for(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds` (b"<CLOSED>" appended on EOF)."""
        deadline = time.monotonic() + seconds
        out, self.buffer = self.buffer, b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return out
            if not chunk:
                return out + b"<CLOSED>"
            out += chunk

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += chunk
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def call(self, data: bytes, terminator: bytes = b"\r\n") -> bytes:
        self.send(data)
        return self.read_until(terminator)

    def meta_call(self, line: bytes) -> bytes:
        """A meta command's whole reply: the line, and the value block after a VA."""
        head = self.call(line)
        if not head.startswith(b"VA "):
            return head
        return head + self.read_exactly(int(head.split(b" ")[1]) + 2)


@contextmanager
def connect(port: int, timeout: float = 5.0) -> Iterator[Client]:
    """A raw-socket `Client`, closed when the block ends."""
    client = Client(port, timeout)
    try:
        yield client
    finally:
        client.close()


def direct_get(server: Memcached, key: bytes) -> bytes:
    """The raw reply of `get key` sent straight to one memcached."""
    with connect(server.port) as client:
        return client.call(b"get " + key + b"\r\n", b"END\r\n")


def stats_on(client: Client) -> dict[str, str]:
    """`stats` asked on `client`'s connection (memcached's or the proxy's), by name."""
    raw = client.call(b"stats\r\n", b"END\r\n")
    stats: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            stats[parts[1].decode()] = parts[2].decode()
    return stats


def poll(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    """Whether `condition` becomes true within `seconds` (checked every 20 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# -- fault-injection servers ---------------------------------------------------------


class Conn:
    """One accepted connection of a FaultServer, read with a short poll interval."""

    def __init__(self, sock: socket.socket, index: int, server: FaultServer) -> None:
        self.sock = sock
        self.index = index
        self.server = server
        self.buffer = b""
        sock.settimeout(0.05)

    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False on EOF, stop or deadline."""
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self.server.record("eof", self.index)
                return False
            if not data:
                self.server.record("eof", self.index)
                return False
            self.buffer += data
            return True
        return False

    def readline(self, timeout: float = 10.0) -> bytes | None:
        """The next request line without CRLF, or None (EOF, stop, timeout)."""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buffer:
            if not self._fill(deadline):
                return None
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Discard input until the peer closes (or stop/timeout)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            self.buffer = b""

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            self.server.record("eof", self.index)
            return False
        return True

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Handler = Callable[[Conn], None]


class FaultServer:
    """A loopback server running `handler(conn)` in a thread per accepted connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stopping = threading.Event()
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def record(self, event: str, index: int) -> None:
        with self._lock:
            if (event, index) not in self.events:
                self.events.append((event, index))

    def count(self, event: str) -> int:
        with self._lock:
            return sum(1 for name, _ in self.events if name == event)

    def has(self, event: str, index: int) -> bool:
        with self._lock:
            return (event, index) in self.events

    def _accept_loop(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = Conn(sock, index, self)
            self.record("accept", index)
            index += 1
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self._lock:
                self._socks.append(sock)
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: Conn) -> None:
        try:
            self.handler(conn)
        except OSError:
            self.record("eof", conn.index)
        finally:
            conn.sock.close()

    def close(self) -> None:
        self.stopping.set()
        self._accepter.join(5)
        self.listener.close()
        with self._lock:
            threads = list(self._threads)
            socks = list(self._socks)
        for sock in socks:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)


@pytest.fixture
def fault_server() -> Iterator[Callable[[Handler], FaultServer]]:
    started: list[FaultServer] = []

    def start(handler: Handler) -> FaultServer:
        server = FaultServer(handler)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def unanswered_listener() -> Iterator[int]:
    """A port whose accept backlog is full: a connect there never completes (connect timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        server.close()
