"""Descriptor limits: no client hangs when the proxy runs out of descriptors.

The proxy raises its soft open-files limit to the hard one at start, and without
`--max-conns` caps client connections below that limit, so that a client over
the cap is accepted and told `ERROR Too many open connections` (as memcached
tells it) rather than left in the listen backlog. With a cap above the limit,
accept fails with EMFILE: that is logged once per episode, never in a loop.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Memcached, free_port, poll, pool_config, wait_for_port

TOO_MANY = b"ERROR Too many open connections\r\n"


class LimitedProxy:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.port = port
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def limited_proxy(tmp_path: Path) -> Iterator[Callable[..., LimitedProxy]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(memcached: Memcached, soft: int, hard: int, *extra: str) -> LimitedProxy:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        port = free_port()
        config = tmp_path / f"config-{port}.json"
        config.write_text(json.dumps(pool_config(memcached.address)))
        log_path = tmp_path / f"proxy-{port}.log"
        command = [
            sys.executable, "-m", "mcrouter_trio", "-p", str(port),
            "--listen-addresses", "127.0.0.1", "-f", str(config), "-L", str(log_path), *extra,
        ]  # fmt: skip
        process = subprocess.Popen(command, preexec_fn=limit, stderr=subprocess.DEVNULL)
        started.append(process)
        wait_for_port(port, process)
        return LimitedProxy(port, process, log_path)

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait()


def ask(sock: socket.socket) -> bytes:
    """Send a get; return the first reply line (b"" if the connection closed)."""
    sock.sendall(b"get fd-key\r\n")
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)  # the socket's timeout fails the test if the proxy hangs
        if not chunk:
            break
        data += chunk
    return data


def closed(sock: socket.socket) -> bool:
    """Whether the proxy closed the connection (EOF, or a reset when the client had
    written a request the proxy never read: it refused the connection unread)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def served_now(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return ask(sock) == b"END\r\n"


def open_clients(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def test_every_client_over_a_low_limit_is_served_or_refused(
    memcached: Memcached, limited_proxy: Callable[..., LimitedProxy]
) -> None:
    proxy = limited_proxy(memcached, 64, 64)
    clients = open_clients(proxy.port, 100)
    try:
        replies = [ask(sock) for sock in clients]
        refused = [sock for sock, reply in zip(clients, replies, strict=True) if reply == TOO_MANY]
        served = [reply for reply in replies if reply == b"END\r\n"]
        assert len(served) + len(refused) == 100, set(replies)
        assert served and refused
        for sock in refused:
            assert closed(sock)
    finally:
        for sock in clients:
            sock.close()
    # Once the proxy has seen the others go, a new client is served again.
    assert poll(lambda: served_now(proxy.port), 10)
    assert "EMFILE" not in proxy.log()


def test_soft_limit_is_raised_to_the_hard_limit(
    memcached: Memcached, limited_proxy: Callable[..., LimitedProxy]
) -> None:
    proxy = limited_proxy(memcached, 64, 512)
    limits = Path(f"/proc/{proxy.process.pid}/limits").read_text()
    assert any(
        line.startswith("Max open files") and line.split()[3:5] == ["512", "512"]
        for line in limits.splitlines()
    ), limits
    clients = open_clients(proxy.port, 100)
    try:
        assert [ask(sock) for sock in clients] == [b"END\r\n"] * 100
    finally:
        for sock in clients:
            sock.close()


def test_emfile_is_logged_once_per_episode_and_accepting_resumes(
    memcached: Memcached, limited_proxy: Callable[..., LimitedProxy]
) -> None:
    """A --max-conns above the descriptor limit: clients wait in the backlog, then are served."""
    proxy = limited_proxy(memcached, 64, 64, "--max-conns", "1000")
    first = open_clients(proxy.port, 70)
    try:
        assert poll(lambda: "EMFILE" in proxy.log(), 10)
        for sock in first[:25]:
            sock.close()  # frees descriptors: the clients waiting in the backlog get in
        for sock in first[25:]:
            assert ask(sock) == b"END\r\n"
    finally:
        for sock in first:
            sock.close()
    assert poll(lambda: "accepting connections again after" in proxy.log(), 10)
    assert proxy.log().count("cannot accept connections: EMFILE") == 1
    assert "Traceback" not in proxy.log()
