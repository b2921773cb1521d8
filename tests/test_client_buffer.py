"""Bounded memory per client: --max-client-buffer and --client-timeout.

A client that pipelines gets for large values and never reads its replies makes
the proxy hold them. At --max-client-buffer bytes nothing more is routed for it,
and if it does not read them down below the limit within --client-timeout it is
disconnected and what it held is freed. Other clients are served meanwhile, and a
client that reads in time keeps its connection and gets every reply.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Client, Memcached, Proxy, poll, pool_config, stats_on

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
    proxy = proxy_factory(
        pool_config(memcached.address),
        "--max-client-buffer", str(LIMIT), "--client-timeout", "20000",
    )  # fmt: skip
    store_big_value(proxy.port)
    sock = non_reading_client(proxy.port, 20)  # 10 MB: over the limit until read
    client = Client.__new__(Client)
    client.sock, client.buffer = sock, b""
    sock.settimeout(30)
    try:
        time.sleep(1)  # the replies pile up over the limit, well within the timeout
        expected = reply_of_get_big() * 20
        assert client.read_exactly(len(expected)) == expected
        assert client.call(b"version\r\n").startswith(b"VERSION ")
        assert "client disconnected" not in proxy.log()
    finally:
        sock.close()
