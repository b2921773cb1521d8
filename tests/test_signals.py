"""Signals never lose a reply and never kill the proxy by accident.

SIGTERM under pipelined load: every set memcached stored must have had its
STORED delivered to the client (read back from memcached directly), and the
proxy exits 0. SIGHUP (a config reload), SIGUSR1 and SIGUSR2 leave the proxy
serving, with one process or with a supervisor and workers.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

import attrs
from conftest import Client, Memcached, Proxy, connect, poll, pool_config

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

CLIENTS = 4
BATCH = 200
VALUE = b"v" * 32


def set_key(client: int, index: int) -> bytes:
    return b"sig-%d-%d" % (client, index)


@attrs.define
class PipeliningClient:
    """Sends sets without waiting (one thread) while counting STORED (another)."""

    index: int
    sock: socket.socket
    sent: int = 0
    stored: int = 0
    other: list[bytes] = attrs.field(factory=list)

    def write(self) -> None:
        try:
            while True:
                batch = range(self.sent, self.sent + BATCH)
                self.sock.sendall(
                    b"".join(
                        b"set %s 0 0 %d\r\n%s\r\n" % (set_key(self.index, i), len(VALUE), VALUE)
                        for i in batch
                    )
                )
                self.sent += BATCH
        except OSError:
            return  # the proxy closed the connection

    def read(self) -> None:
        """Read slowly, so that replies queue up in the proxy's socket as they do over a WAN."""
        buffer = b""
        try:
            while chunk := self.sock.recv(4096):
                time.sleep(0.0005)
                buffer += chunk
                lines = buffer.split(b"\r\n")
                buffer = lines.pop()
                for line in lines:
                    if line == b"STORED":
                        self.stored += 1
                    else:
                        self.other.append(line)
        except ConnectionResetError:
            pass  # after every byte the proxy sent (Linux delivers those first)


def stored_without_reply(server: Memcached, client: PipeliningClient) -> list[bytes]:
    """Keys of `client` past its last STORED that memcached has anyway."""
    found = []
    with connect(server.port) as direct:
        for start in range(client.stored, client.sent + BATCH, 100):
            keys = [set_key(client.index, i) for i in range(start, start + 100)]
            reply = direct.call(b"get " + b" ".join(keys) + b"\r\n", b"END\r\n")
            found += [
                line.split(b" ")[1] for line in reply.split(b"\r\n") if line.startswith(b"VALUE")
            ]
    return found


def slow_reading_connection(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a small window
    sock.connect(("127.0.0.1", port))
    return sock


def test_sigterm_under_pipelined_load_loses_no_reply(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--graceful-shutdown-timeout", "20")
    clients = [PipeliningClient(i, slow_reading_connection(proxy.port)) for i in range(CLIENTS)]
    threads = [
        threading.Thread(target=work, daemon=True)
        for client in clients
        for work in (client.write, client.read)
    ]
    for thread in threads:
        thread.start()
    assert poll(lambda: all(c.stored > 5 * BATCH for c in clients), 30)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=30) == 0
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    for client in clients:
        client.sock.close()
        assert client.other == []
        assert client.stored < client.sent  # stopped mid-stream, not after the last set
        assert stored_without_reply(memcached, client) == []
        # And every STORED was a real store (the last one, say).
        last = set_key(client.index, client.stored - 1)
        with connect(memcached.port) as direct:
            assert direct.call(b"get " + last + b"\r\n", b"END\r\n").startswith(b"VALUE " + last)
    assert "shutting down" in proxy.log()


def test_sigterm_closes_an_idle_connection_and_exits_zero(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(b"set idle 0 0 1\r\nx\r\n") == b"STORED\r\n"
        proxy.process.send_signal(signal.SIGTERM)
        assert client.read_for(10) == b"<CLOSED>"
    assert proxy.process.wait(timeout=10) == 0


def serves(port: int) -> bool:
    with connect(port) as client:
        return client.call(b"set alive 0 0 3\r\nyes\r\n") == b"STORED\r\n"


def test_sighup_and_sigusr_leave_the_proxy_serving(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as open_client:
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            proxy.process.send_signal(signum)
            assert serves(proxy.port)
        assert (
            open_client.call(b"get alive\r\n", b"END\r\n") == b"VALUE alive 0 3\r\nyes\r\nEND\r\n"
        )
    # Two SIGHUPs within the reconfiguration delay make one reload.
    assert poll(lambda: proxy.log().count("config reloaded") >= 1, 10)
    assert proxy.log().count("received SIGHUP: reloading the config") == 2
    assert "received SIGUSR1: ignored" in proxy.log()
    assert proxy.process.poll() is None
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=10) == 0


def test_sighup_to_the_supervisor_reaches_every_worker_and_kills_none(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "2")
    assert poll(lambda: proxy.log().count("listening on") == 2, 10)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        proxy.process.send_signal(signum)
    assert poll(lambda: proxy.log().count("config reloaded") == 2, 10), proxy.log()
    assert "passing it to 2 workers" in proxy.log()
    assert proxy.process.poll() is None
    # Both workers still serve (connections spread over them), none was restarted.
    clients = [Client(proxy.port) for _ in range(8)]
    try:
        for client in clients:
            assert client.call(b"set w 0 0 1\r\nx\r\n") == b"STORED\r\n"
    finally:
        for client in clients:
            client.close()
    assert "exited with status" not in proxy.log()
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=15) == 0
