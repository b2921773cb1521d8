"""Bounded memory per client: --max-client-buffer and --client-timeout.

A client that pipelines gets for large values and never reads its replies makes
the proxy hold them. At half --max-client-buffer nothing more is routed for it;
if it does not read them down below that within --client-timeout it is
disconnected, and past the whole limit it is disconnected at once, which frees
what it held. Other clients are served meanwhile, and a client that reads in time
keeps its connection and gets every reply.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _pki import make_pki
from conftest import Client, Memcached, Proxy, connect, poll, pool_config, stats_on

ProxyFactory = Callable[..., Proxy]

VALUE = bytes(range(256)) * 2000  # 512 000 bytes
LIMIT = 2_000_000


def store_big_value(port: int) -> None:
    client = Client(port)
    try:
        assert client.call(b"set big 0 0 %d\r\n%s\r\n" % (len(VALUE), VALUE)) == b"STORED\r\n"
    finally:
        client.close()


def reply_of_get_big() -> bytes:
    return b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(VALUE), VALUE)


def non_reading_client(port: int, gets: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies back up at once
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"get big\r\n" * gets)
    return sock


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_client_that_never_reads_is_disconnected_and_its_replies_freed(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(
        pool_config(memcached.address),
        "--max-client-buffer", str(LIMIT), "--client-timeout", "300",
    )  # fmt: skip
    store_big_value(proxy.port)
    other = Client(proxy.port, timeout=10)
    try:
        assert other.call(b"get big\r\n", b"END\r\n") == reply_of_get_big()
        before = resident_bytes(proxy.process.pid)
        hog = non_reading_client(proxy.port, 100)  # 51 MB of replies
        try:
            # The disconnect first: before the hog is accepted the count is 1 too.
            assert poll(lambda: "client disconnected" in proxy.log(), 15), proxy.log()
            assert poll(lambda: stats_on(other)["curr_connections"] == "1", 5), proxy.log()
            # Meanwhile and afterwards, the other client is served.
            assert other.call(b"get big\r\n", b"END\r\n") == reply_of_get_big()
            # The 51 MB it asked for are not held for it.
            assert resident_bytes(proxy.process.pid) - before < 25_000_000
        finally:
            hog.close()
    finally:
        other.close()


def test_client_over_the_limit_that_reads_in_time_gets_every_reply(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    limit = 16_000_000
    proxy = proxy_factory(
        pool_config(memcached.address),
        "--max-client-buffer", str(limit), "--client-timeout", "20000",
    )  # fmt: skip
    store_big_value(proxy.port)
    # 14.3 MB: the kernel's send buffer takes at most 4 MB of it (tcp_wmem's default
    # maximum), so the proxy holds between half the limit and the limit.
    gets = 28
    sock = non_reading_client(proxy.port, gets)
    sock.settimeout(30)
    try:
        time.sleep(1)  # the replies pile up over the limit, well within the timeout
        expected = reply_of_get_big() * gets
        received = bytearray()  # the small receive buffer gives small reads: no bytes +=
        while len(received) < len(expected):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(received)} bytes; {proxy.log()}"
            received += chunk
        assert received == expected
        sock.sendall(b"version\r\n")
        assert sock.recv(100).startswith(b"VERSION ")
        assert "client disconnected" not in proxy.log()
    finally:
        sock.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_slow_reader_over_the_mark_keeps_its_connection_and_gets_every_reply(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path, tls: bool
) -> None:
    """--client-timeout measures a client that reads nothing, not one that reads slowly.

    14.3 MB of replies asked for at once, of which the kernel's buffers take at most
    4.1 MB, read at 1.6 MB/s at most for 2.5 s: the proxy holds over half the 16 MB
    limit (routing stopped) for more than 1.4 s, past the 1 s timeout, while the
    client reads something every 40 ms. Then it reads the rest at full speed.
    """
    store_big_value(memcached.port)
    pki = make_pki(tmp_path / "pki") if tls else None
    proxy = proxy_factory(
        pool_config(memcached.address),
        "--max-client-buffer", "16000000", "--client-timeout", "1000",
        *(pki.server_flags() if pki is not None else ()),
        plain=not tls, tls=tls,
    )  # fmt: skip
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", proxy.port))
    sock = raw
    if pki is not None:
        sock = pki.client_context().wrap_socket(raw, server_hostname="localhost")
    gets = 28
    expected = reply_of_get_big() * gets
    try:
        sock.sendall(b"get big\r\n" * gets)
        received = bytearray()
        slow_until = time.monotonic() + 2.5
        while len(received) < len(expected):
            tick = len(received) + 65536
            while len(received) < min(tick, len(expected)):
                chunk = sock.recv(65536)
                assert chunk, f"closed after {len(received)} bytes; {proxy.log()}"
                received += chunk
            if time.monotonic() < slow_until:
                time.sleep(0.04)
        assert received == expected
        assert "client disconnected" not in proxy.log()
    finally:
        sock.close()


MEGABYTE_VALUE = bytes(range(256)) * 3900  # 998 400 bytes: within memcached's 1 MiB items
DEFAULT_LIMIT = 64 * 1024 * 1024


def peak_resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class CheckingClient(threading.Thread):
    """Gets a small and a large key in a loop, and records any reply that is not exact."""

    def __init__(self, port: int, expected: dict[bytes, bytes]) -> None:
        super().__init__(daemon=True)
        self.client = Client(port, timeout=20)
        self.expected = expected
        self.stop = threading.Event()
        self.answered = 0
        self.wrong: list[bytes] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for key, reply in self.expected.items():
                    got = self.client.call(b"get %s\r\n" % key, b"END\r\n")
                    if got != reply:
                        self.wrong.append(got[:200])
                    self.answered += 1
        except OSError as exc:
            self.wrong.append(repr(exc).encode())
        finally:
            self.client.close()


@pytest.mark.parametrize("limit", [16 * 1024 * 1024, DEFAULT_LIMIT])
def test_client_that_never_reads_cannot_grow_the_proxy_past_the_limit(
    memcached: Memcached, proxy_factory: ProxyFactory, limit: int
) -> None:
    """About 30 KB of gets for a 1 MB value, never read: 3.4 GB of replies asked for.

    The proxy holds at most --max-client-buffer for the client (then closes it at
    once, whatever --client-timeout says); add the one reply being read from the
    server and its copy, and the peak growth stays well under twice the limit (the
    default's: 134 MB, under the 150 MB this scenario is allowed). Meanwhile another
    client on the same server connection gets every reply right.
    """
    flags = [] if limit == DEFAULT_LIMIT else ["--max-client-buffer", str(limit)]
    proxy = proxy_factory(pool_config(memcached.address), *flags, "--client-timeout", "5000")
    setter = Client(proxy.port)
    try:
        big = b"set big 0 0 %d\r\n%s\r\n" % (len(MEGABYTE_VALUE), MEGABYTE_VALUE)
        assert setter.call(big) == b"STORED\r\n"
        assert setter.call(b"set small 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    finally:
        setter.close()
    expected = {
        b"small": b"VALUE small 0 2\r\nhi\r\nEND\r\n",
        b"big": b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(MEGABYTE_VALUE), MEGABYTE_VALUE),
    }
    checker = CheckingClient(proxy.port, expected)
    checker.start()
    try:
        assert poll(lambda: checker.answered > 10, 10)
        before = resident_bytes(proxy.process.pid)
        hog = non_reading_client(proxy.port, 30_000 // len(b"get big\r\n"))
        try:
            assert poll(lambda: "client disconnected" in proxy.log(), 30), proxy.log()
            answered = checker.answered
            # The replies still in flight are read off the server and dropped, and
            # the checking client's requests queued behind them are answered.
            assert poll(lambda: checker.answered > answered + 10, 30), proxy.log()
            growth = peak_resident_bytes(proxy.process.pid) - before
            assert growth < 2 * limit, f"{growth / 1e6:.0f} MB"
        finally:
            hog.close()
        with connect(proxy.port) as client:
            assert stats_on(client)["client_buffer_disconnects"] == "1"
    finally:
        checker.stop.set()
        checker.join(30)
    assert not checker.is_alive()
    assert checker.wrong == []
