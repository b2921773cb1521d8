"""Client sessions under back-pressure: slow readers, outstanding limits, draining.

Plain-TCP sessions are driven by the proxy's reactor and written by whichever
task resolves their replies; these tests pin down the paths that only matter
when a client misbehaves or the proxy stops: a client that does not read its
replies, a client over `--max-client-outstanding-reqs`, and SIGTERM while a
request is still in flight.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

from conftest import Client, Memcached, Proxy, pool_config

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def read_exactly(client: Client, size: int) -> bytes:
    out, client.buffer = client.buffer, b""
    while len(out) < size:
        chunk = client.sock.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    return out


def value_reply(key: bytes, value: bytes) -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def test_client_that_stops_reading_gets_every_reply_in_order_later(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    values = {b"big%d" % i: bytes([65 + i]) * 100_000 for i in range(8)}
    setup = Client(proxy.port)
    for key, value in values.items():
        assert setup.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)) == b"STORED\r\n"
    keys = [b"big%d" % (i % 8) for i in range(300)]  # ~30 MB of replies
    expected = b"".join(value_reply(key, values[key]) for key in keys)

    slow = Client(proxy.port, timeout=30)
    sender = threading.Thread(
        target=slow.send, args=(b"".join(b"get %s\r\n" % key for key in keys),), daemon=True
    )
    sender.start()
    time.sleep(1.0)  # the replies fill every socket buffer on the way back
    # The proxy keeps serving other clients while this one does not read.
    assert setup.call(b"get big3\r\n", b"END\r\n") == value_reply(b"big3", values[b"big3"])
    got = read_exactly(slow, len(expected))
    sender.join(timeout=10)
    assert len(got) == len(expected)
    assert got == expected
    assert slow.call(b"version\r\n").startswith(b"VERSION ")


def test_outstanding_limit_holds_input_back_but_answers_everything(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--max-client-outstanding-reqs", "3")
    requests: list[bytes] = []
    replies: list[bytes] = []
    for i in range(400):
        key = b"lim%d" % (i % 17)
        value = b"v%d" % i
        requests.append(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        replies.append(b"STORED\r\n")
        requests.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, len(value), value))
        requests.append(b"get %s\r\n" % key)
        replies.append(value_reply(key, value))
        requests.append(b"mn\r\n")
        replies.append(b"MN\r\n")
    client = Client(proxy.port, timeout=20)
    client.send(b"".join(requests))
    expected = b"".join(replies)
    assert read_exactly(client, len(expected)) == expected
    assert client.read_for(0.2) == b""  # nothing more follows


def test_limits_of_zero_mean_no_limit(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(
        pool_config(memcached.address),
        *("--max-client-outstanding-reqs", "0", "--target-max-pending-requests", "0"),
    )
    client = Client(proxy.port)
    client.send(b"set z 0 0 1\r\nv\r\n" + b"get z\r\n" * 100)
    expected = b"STORED\r\n" + value_reply(b"z", b"v") * 100
    assert read_exactly(client, len(expected)) == expected


def test_quit_after_a_long_pipeline_answers_everything_first(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--max-client-outstanding-reqs", "5")
    client = Client(proxy.port)
    client.send(b"set qq 0 0 2\r\nhi\r\n" + b"get qq\r\n" * 50 + b"quit\r\nget qq\r\n")
    expected = b"STORED\r\n" + value_reply(b"qq", b"hi") * 50
    assert client.read_for(3) == expected + b"<CLOSED>"


def test_sigterm_answers_the_request_in_flight_then_closes(proxy_factory: ProxyFactory) -> None:
    # A backend that accepts (in the kernel's backlog) and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        config = pool_config(f"127.0.0.1:{silent.getsockname()[1]}", server_timeout=1500)
        proxy = proxy_factory(config, "--graceful-shutdown-timeout", "5")
        idle = Client(proxy.port)
        assert idle.call(b"version\r\n").startswith(b"VERSION ")
        busy = Client(proxy.port)
        busy.send(b"get key\r\n")
        time.sleep(0.3)
        proxy.process.send_signal(signal.SIGTERM)
        assert idle.read_for(1) == b"<CLOSED>"
        assert busy.read_for(4) == b"SERVER_ERROR Reply timeout\r\n<CLOSED>"
        assert proxy.process.wait(timeout=5) == 0
    finally:
        silent.close()
