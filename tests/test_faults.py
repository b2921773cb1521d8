"""Faults: misbehaving backends and clients, connection limits, shutdown.

Backends that misbehave are small socket servers (`FaultServer`, in conftest.py):
one that never answers, one that resets mid-reply, one that sends garbage or
answers twice, one that answers late. They answer `get <key>` with the value
`value-of-<key>`, so a reply delivered to the wrong request is always visible. A
healthy backend is a real memcached, sometimes reached through a forwarding
`FaultServer` so that it can "come back" on the same address.
"""

from __future__ import annotations

import re
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import (
    Client,
    Conn,
    FaultServer,
    Handler,
    Memcached,
    Proxy,
    connect,
    free_port,
    poll,
    pool_config,
)

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

REMOTE_ERROR = b"SERVER_ERROR remote error\r\n"
REPLY_TIMEOUT = b"SERVER_ERROR Reply timeout\r\n"
CONNECT_ERROR = b"SERVER_ERROR connection error\r\n"
TKO_CONNECT_ERROR = b"SERVER_ERROR Server unavailable. Reason: mc_res_connect_error\r\n"


def value_of(key: bytes) -> bytes:
    return b"value-of-" + key


def get_reply(key: bytes) -> bytes:
    value = value_of(key)
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def get_key(line: bytes) -> bytes:
    words = line.split()
    assert len(words) == 2 and words[0] == b"get", line
    return words[1]


def never_answer(conn: Conn) -> None:
    conn.wait_closed()


def answer_gets(conn: Conn) -> None:
    """Answer every `get <key>` honestly, in order."""
    while (line := conn.readline()) is not None:
        if not conn.send(get_reply(get_key(line))):
            return


def forward_to(
    port: int, pause_after: bytes | None = None, sent: bytearray | None = None
) -> Handler:
    """A handler that relays the connection to a real server on `port`.

    With `pause_after`, it stops reading for a second after relaying those bytes.
    With `sent`, every byte relayed towards the server is also appended to it.
    """

    def forward(conn: Conn) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as upstream:
            conn.sock.settimeout(5)
            if conn.buffer:
                upstream.sendall(conn.buffer)
                if sent is not None:
                    sent.extend(conn.buffer)
            with selectors.DefaultSelector() as selector:
                selector.register(conn.sock, selectors.EVENT_READ, upstream)
                selector.register(upstream, selectors.EVENT_READ, conn.sock)
                while not conn.server.stopping.is_set():
                    for key, _ in selector.select(0.05):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            conn.server.record("eof", conn.index)
                            return
                        key.data.sendall(data)
                        if sent is not None and source is conn.sock:
                            sent.extend(data)
                        if pause_after is not None and pause_after in data:
                            time.sleep(1.0)

    return forward


# -- helpers -------------------------------------------------------------------------


def read_replies(client: Client, count: int) -> list[bytes]:
    """`count` replies to single-key gets: a VALUE block, END, or one error line."""
    replies = []
    for _ in range(count):
        line = client.read_until(b"\r\n")
        if line.startswith(b"VALUE "):
            line += client.read_until(b"\r\n") + client.read_until(b"\r\n")
        replies.append(line)
    return replies


def selector_config(get_pool: dict[str, Any], other_pool: dict[str, Any]) -> dict[str, Any]:
    """`get` goes to pool "get", every other command to pool "other"."""
    return {
        "pools": {"get": get_pool, "other": other_pool},
        "route": {
            "type": "OperationSelectorRoute",
            "operation_policies": {"get": "PoolRoute|get"},
            "default_policy": "PoolRoute|other",
        },
    }


def proxy_alive(proxy: Proxy) -> None:
    assert proxy.process.poll() is None, proxy.log()


# -- stalled backends ----------------------------------------------------------------


def test_backend_that_never_answers_times_out(
    fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory
) -> None:
    backend = fault_server(never_answer)
    proxy = proxy_factory(pool_config(backend.address), "-t", "200")
    with connect(proxy.port) as client:
        started = time.monotonic()
        assert client.call(b"get k\r\n") == REPLY_TIMEOUT
        elapsed = time.monotonic() - started
        assert 0.15 <= elapsed < 1.5, elapsed
        # The stream is abandoned (a late reply must not reach a later request).
        assert poll(lambda: backend.has("eof", 0))

        client.send(b"get a\r\nget b\r\nset c 0 0 1\r\nx\r\n")
        assert [client.read_until(b"\r\n") for _ in range(3)] == [REPLY_TIMEOUT] * 3
    assert backend.count("accept") == 2  # reconnected for the second batch
    proxy_alive(proxy)


def test_requests_the_backend_cannot_take_yet_go_out_later_in_order(
    fault_server: Callable[[Handler], FaultServer],
    memcached: Memcached,
    proxy_factory: ProxyFactory,
) -> None:
    # While the backend does not read, the proxy's writes fill the socket buffers and
    # then block part-way; what is left must follow, in order, once it reads again.
    backend = fault_server(forward_to(memcached.port, pause_after=b"get pause\r\n"))
    proxy = proxy_factory(pool_config(backend.address, server_timeout=10000))
    values = [bytes([65 + i % 26]) * 900_000 + b"%d" % i for i in range(30)]  # ~27 MB
    pipeline = b"".join(
        b"set big%d 0 0 %d\r\n%s\r\n" % (i, len(value), value) for i, value in enumerate(values)
    )
    with connect(proxy.port, timeout=20) as client:
        assert client.call(b"get warm\r\n") == b"END\r\n"  # connected and idle
        sender = threading.Thread(target=client.sock.sendall, args=(b"get pause\r\n" + pipeline,))
        sender.start()
        assert client.read_until(b"\r\n") == b"END\r\n"
        assert [client.read_until(b"\r\n") for _ in values] == [b"STORED\r\n"] * len(values)
        sender.join()
        for i in (0, 17, 29):
            expected = b"VALUE big%d 0 %d\r\n%s\r\nEND\r\n" % (i, len(values[i]), values[i])
            assert client.call(b"get big%d\r\n" % i, b"END\r\n") == expected
    proxy_alive(proxy)


def test_late_reply_never_reaches_the_next_request(
    fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory
) -> None:
    def slow_for_one_key(conn: Conn) -> None:
        while (line := conn.readline()) is not None:
            key = get_key(line)
            if key == b"slow":
                time.sleep(0.6)
            if not conn.send(get_reply(key)):
                return

    backend = fault_server(slow_for_one_key)
    proxy = proxy_factory(pool_config(backend.address), "-t", "200")
    with connect(proxy.port) as client:
        assert client.call(b"get slow\r\n") == REPLY_TIMEOUT
        assert client.call(b"get fast\r\n", b"END\r\n") == get_reply(b"fast")
        time.sleep(0.6)  # the late "slow" reply has been sent by now
        assert client.call(b"get other\r\n", b"END\r\n") == get_reply(b"other")


def test_healthy_pool_answers_promptly_while_another_stalls(
    fault_server: Callable[[Handler], FaultServer],
    memcached: Memcached,
    proxy_factory: ProxyFactory,
) -> None:
    stalled = fault_server(never_answer)
    config = selector_config(
        {"servers": [stalled.address], "server_timeout": 3000},
        {"servers": [memcached.address]},
    )
    proxy = proxy_factory(config, "-t", "200")
    with connect(proxy.port) as waiting, connect(proxy.port) as healthy:
        started = time.monotonic()
        waiting.send(b"get stuck\r\n")
        assert poll(lambda: stalled.count("accept") == 1)
        for i in range(20):
            before = time.monotonic()
            assert healthy.call(b"set k%d 0 0 2\r\n%02d\r\n" % (i, i)) == b"STORED\r\n"
            assert healthy.call(b"incr counter 1\r\n") == b"NOT_FOUND\r\n"
            reply = healthy.call(b"gets k%d\r\n" % i, b"END\r\n")
            assert reply.startswith(b"VALUE k%d 0 2 " % i), reply
            assert time.monotonic() - before < 1.0
        assert time.monotonic() - started < 2.5, "healthy traffic was slowed by the stall"
        assert waiting.read_for(0.01) == b"", "the stalled get was answered too early"
        waiting.sock.settimeout(5)  # read_for shortened it
        assert waiting.read_until(b"\r\n") == REPLY_TIMEOUT
        elapsed = time.monotonic() - started
        assert 2.5 <= elapsed < 5.0, elapsed  # the pool's server_timeout, not -t


# -- broken reply streams ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "lines"),
    [("tls", 3), ("always", 1)],  # plain server: three gets, or one batched multi-get
)
def test_reset_mid_reply_fails_pending_requests_then_reconnects(
    fault_server: Callable[[Handler], FaultServer],
    memcached: Memcached,
    proxy_factory: ProxyFactory,
    mode: str,
    lines: int,
) -> None:
    back = threading.Event()
    forward = forward_to(memcached.port)

    def reset_until_back(conn: Conn) -> None:
        if back.is_set():
            forward(conn)
            return
        for _ in range(lines):
            if conn.readline() is None:
                return
        conn.send(b"VALUE a 0 10\r\nabc")  # part of the first reply, then RST
        conn.reset()

    backend = fault_server(reset_until_back)
    proxy = proxy_factory(pool_config(backend.address), "--batch-gets", mode)
    hit = b"VALUE k 0 2\r\nhi\r\nEND\r\n"
    with connect(proxy.port) as client:
        client.send(b"get a\r\nget b\r\nget c\r\n")
        assert [client.read_until(b"\r\n") for _ in range(3)] == [REMOTE_ERROR] * 3

        back.set()
        assert client.call(b"set k 0 0 2\r\nhi\r\n") == b"STORED\r\n"
        assert client.call(b"get k\r\n", b"END\r\n") == hit
        client.send(b"get k\r\nget nothing\r\nget k\r\n")
        assert client.read_exactly(2 * len(hit) + 5) == hit + b"END\r\n" + hit
    with connect(memcached.port) as direct:
        assert direct.call(b"get k\r\n", b"END\r\n") == hit
    assert backend.count("accept") == 2
    proxy_alive(proxy)


def test_garbage_from_backend_never_misroutes_a_reply(
    fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory
) -> None:
    def garbage_on_first_connection(conn: Conn) -> None:
        answered = 0
        while (line := conn.readline()) is not None:
            key = get_key(line)
            # On the first connection, two garbage "replies", then carry on as if
            # nothing happened: a proxy that kept the stream would shift every
            # later reply.
            garbage = conn.index == 0 and answered == 30
            if garbage and not conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\n"):
                return
            if not conn.send(get_reply(key)):
                return
            answered += 1

    backend = fault_server(garbage_on_first_connection)
    proxy = proxy_factory(pool_config(backend.address))
    clients, per_client = 8, 40
    results: dict[int, list[bytes]] = {}
    errors: list[BaseException] = []

    def run(client_id: int) -> None:
        try:
            keys = [b"c%d-k%d" % (client_id, j) for j in range(per_client)]
            with connect(proxy.port, timeout=10) as client:
                client.send(b"".join(b"get %s\r\n" % key for key in keys))
                results[client_id] = read_replies(client, per_client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert sorted(results) == list(range(clients))

    failed = 0
    for client_id, replies in results.items():
        for j, reply in enumerate(replies):
            if reply.startswith(b"SERVER_ERROR "):
                assert reply == REMOTE_ERROR
                failed += 1
            else:
                assert reply == get_reply(b"c%d-k%d" % (client_id, j)), (client_id, j, reply)
    assert failed >= 1, "the garbage went unnoticed"
    assert poll(lambda: backend.has("eof", 0)), "the proxy kept the garbled connection"
    with connect(proxy.port) as client:
        assert client.call(b"get after\r\n", b"END\r\n") == get_reply(b"after")
    assert backend.count("accept") >= 2


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(get_reply(b"first"), id="same-reply-twice"),
        pytest.param(get_reply(b"second"), id="reply-to-a-future-request"),
        pytest.param(b"STORED\r\n", id="stray-line"),
    ],
)
def test_unsolicited_reply_breaks_the_stream(
    extra: bytes, fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory
) -> None:
    def answer_first_twice(conn: Conn) -> None:
        first = True
        while (line := conn.readline()) is not None:
            key = get_key(line)
            reply = get_reply(key)
            if conn.index == 0 and first:
                reply += extra  # one send: the extra bytes arrive with the reply
                first = False
            if not conn.send(reply):
                return

    backend = fault_server(answer_first_twice)
    proxy = proxy_factory(pool_config(backend.address))
    with connect(proxy.port) as client:
        assert client.call(b"get first\r\n", b"END\r\n") == get_reply(b"first")
        assert poll(lambda: backend.has("eof", 0)), "the extra reply went unnoticed"
        assert client.call(b"get second\r\n", b"END\r\n") == get_reply(b"second")
        assert client.call(b"get third\r\n", b"END\r\n") == get_reply(b"third")
    assert backend.count("accept") == 2


def test_connection_refused_answers_quickly_and_proxy_keeps_serving(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    config = selector_config({"servers": [nobody]}, {"servers": [memcached.address]})
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        started = time.monotonic()
        assert client.call(b"get k\r\n") == b"SERVER_ERROR connection error\r\n"
        assert time.monotonic() - started < 1.0
        for i in range(5):
            assert client.call(b"set k%d 0 0 1\r\n%d\r\n" % (i, i)) == b"STORED\r\n"
            started = time.monotonic()
            reply = client.call(b"get k%d\r\n" % i)
            assert re.fullmatch(rb"SERVER_ERROR [^\r\n]+\r\n", reply), reply
            assert time.monotonic() - started < 1.0
        # A multi-get whose keys all fail ends with the error instead of END.
        reply = client.call(b"get a b\r\n")
        assert re.fullmatch(rb"SERVER_ERROR [^\r\n]+\r\n", reply), reply
        assert client.call(b"gets k1\r\n", b"END\r\n").startswith(b"VALUE k1 0 1 ")
    proxy_alive(proxy)


def test_multiget_with_a_failing_key_ends_with_the_error_not_end(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(pool_config(memcached.address, nobody))
    good: list[bytes] = []
    bad: list[bytes] = []
    with connect(proxy.port) as client:
        for i in range(40):
            key = b"p%d" % i
            reply = client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(key), key))
            if reply == b"STORED\r\n":
                good.append(key)
            else:
                # The first connect fails; from then on the server is TKO.
                expected = CONNECT_ERROR if not bad else TKO_CONNECT_ERROR
                assert reply == expected, reply
                bad.append(key)
        assert len(good) >= 3 and bad, (good, bad)

        keys = [good[0], bad[0], good[1], good[0]]
        reply = client.call(b"get " + b" ".join(keys) + b"\r\n", TKO_CONNECT_ERROR)
        assert client.read_for(0.2) == b"", "nothing may follow the error line"
        client.sock.settimeout(5)  # read_for shortened it
        # mcrouter's rule: the first error replaces END; hits are VALUE blocks in
        # key order (which of them made it before the error depends on timing).
        blocks = re.findall(rb"VALUE (\S+) 0 \d+\r\n\S+\r\n", reply)
        assert (
            reply
            == b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(k), k) for k in blocks)
            + TKO_CONNECT_ERROR
        )
        remaining = iter(k for k in keys if k in good)
        assert all(any(k == r for r in remaining) for k in blocks), (keys, blocks)

        # Without the failing key: a normal reply ending in END (with a miss on the
        # healthy server in the middle).
        assert client.call(b"delete %s\r\n" % good[2]) == b"DELETED\r\n"
        keys = [good[1], good[2], good[0]]
        assert client.call(b"get " + b" ".join(keys) + b"\r\n", b"END\r\n") == (
            b"VALUE %s 0 %d\r\n%s\r\n" % (good[1], len(good[1]), good[1])
            + b"VALUE %s 0 %d\r\n%s\r\n" % (good[0], len(good[0]), good[0])
            + b"END\r\n"
        )


# -- misbehaving clients -------------------------------------------------------------


def test_garbage_from_clients_does_not_affect_others(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as good:
        assert good.call(b"set g 0 0 4\r\ngood\r\n") == b"STORED\r\n"

        with connect(proxy.port) as http:
            http.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert http.read_for(2) == b"<CLOSED>"

        with connect(proxy.port) as binary:
            # A binary-protocol GET (magic 0x80) for key "g".
            binary.send(struct.pack("!BBHBBHIIQ", 0x80, 0x00, 1, 0, 0, 0, 1, 0, 0) + b"g")
            assert binary.read_for(2) == b"<CLOSED>"

        with connect(proxy.port) as noise:
            noise.send(
                b"xyzzy plugh\r\n"
                b"\x16\x03\x01\x02\x00\xff\xfe\r\n"
                b"set k 0 0 notanumber\r\n"
                b"\r\n"
                b"version\r\n"
            )
            replies = [noise.read_until(b"\r\n") for _ in range(5)]
            assert replies[:4] == [
                b"ERROR\r\n",
                b"ERROR\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                b"ERROR\r\n",
            ]
            assert replies[4].startswith(b"VERSION ")

        with connect(proxy.port) as endless:
            endless.send(b"A" * 8192)  # a command line that never ends
            assert endless.read_for(2).endswith(b"<CLOSED>")

        assert good.call(b"get g\r\n", b"END\r\n") == b"VALUE g 0 4\r\ngood\r\nEND\r\n"
    with connect(proxy.port) as late:
        assert late.call(b"get g\r\n", b"END\r\n") == b"VALUE g 0 4\r\ngood\r\nEND\r\n"
    proxy_alive(proxy)


def curr_connections(port: int) -> int:
    with connect(port) as client:
        raw = client.call(b"stats\r\n", b"END\r\n")
    found = re.search(rb"STAT curr_connections (\d+)\r\n", raw)
    assert found is not None, raw
    return int(found.group(1))


def test_abrupt_disconnects_leave_the_proxy_healthy(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))

    def abrupt(i: int) -> None:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            kind = i % 4
            if kind == 0:  # half of a set's data block
                sock.sendall(b"set abrupt%d 0 0 100\r\n" % i + b"x" * 40)
            elif kind == 1:  # half of a command line
                sock.sendall(b"get abru")
            elif kind == 2:  # complete requests, gone before the replies
                sock.sendall(b"set done%d 0 0 1\r\n1\r\nget done%d\r\n" % (i, i))
            else:  # half a set line
                sock.sendall(b"set abrupt%d 0 0" % i)
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for i in range(first, 200, 20):
                abrupt(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors

    proxy_alive(proxy)
    assert poll(lambda: curr_connections(proxy.port) == 1), "sessions leaked"
    with connect(proxy.port) as client:
        assert client.call(b"set after 0 0 2\r\nok\r\n") == b"STORED\r\n"
        assert client.call(b"get after\r\n", b"END\r\n") == b"VALUE after 0 2\r\nok\r\nEND\r\n"
    with connect(memcached.port) as direct:
        half_sent = b" ".join(b"abrupt%d" % i for i in range(200))
        assert direct.call(b"get " + half_sent + b"\r\n") == b"END\r\n"


def test_max_conns_rejects_the_sixth_connection(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--max-conns", "5")
    clients = [Client(proxy.port)]
    try:
        # Wait until the fixture's readiness probe has been let go.
        assert poll(
            lambda: b"STAT curr_connections 1\r\n" in clients[0].call(b"stats\r\n", b"END\r\n")
        )
        for _ in range(4):
            clients.append(Client(proxy.port))
            assert clients[-1].call(b"version\r\n").startswith(b"VERSION ")
        with connect(proxy.port) as sixth:
            assert sixth.read_for(2) == b"ERROR Too many open connections\r\n<CLOSED>"
        for client in clients:
            assert client.call(b"version\r\n").startswith(b"VERSION ")

        clients.pop().close()
        # Connecting before the proxy has seen the close would be refused (and,
        # with the request unread, reset): wait until the slot is freed.
        assert poll(
            lambda: b"STAT curr_connections 4\r\n" in clients[0].call(b"stats\r\n", b"END\r\n")
        ), "closing a client did not free its slot"
        with connect(proxy.port) as again:
            assert again.call(b"version\r\n").startswith(b"VERSION "), "a freed slot was not reused"
    finally:
        for client in clients:
            client.close()


def test_sigterm_exits_zero_within_grace_period_with_idle_client(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    grace = 3.0
    proxy = proxy_factory(pool_config(memcached.address), "--graceful-shutdown-timeout", str(grace))
    with connect(proxy.port) as idle:
        assert idle.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(timeout=grace) == 0, proxy.log()
        assert idle.read_for(1).endswith(b"<CLOSED>")


# -- batched gets (`--batch-gets`) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "wire"),
    [
        ("always", b"get a b a\r\n"),
        ("never", b"get a\r\nget b\r\nget a\r\n"),
        ("tls", b"get a\r\nget b\r\nget a\r\n"),  # the default batches for TLS only
    ],
)
def test_gets_of_one_pass_leave_as_one_multi_get(
    fault_server: Callable[[Handler], FaultServer],
    memcached: Memcached,
    proxy_factory: ProxyFactory,
    mode: str,
    wire: bytes,
) -> None:
    sent = bytearray()  # what the proxy sent to memcached
    backend = fault_server(forward_to(memcached.port, sent=sent))
    proxy = proxy_factory(pool_config(backend.address), "--batch-gets", mode)
    with connect(proxy.port) as client:
        assert client.call(b"set a 3 0 2\r\nhi\r\n") == b"STORED\r\n"
        client.send(b"get a\r\nget b\r\nget a\r\n")  # one read, so one pass
        hit = b"VALUE a 3 2\r\nhi\r\nEND\r\n"
        assert client.read_exactly(2 * len(hit) + 5) == hit + b"END\r\n" + hit
    assert bytes(sent) == b"set a 3 0 2\r\nhi\r\n" + wire


def test_pending_limit_counts_every_key_of_a_batched_get(
    fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory
) -> None:
    stalled = fault_server(never_answer)
    proxy = proxy_factory(
        pool_config(stalled.address),
        *("-t", "300", "--batch-gets", "always", "--target-max-pending-requests", "2"),
    )
    with connect(proxy.port) as client:
        client.send(b"get a\r\nget b\r\nget c\r\n")
        replies = [client.read_until(b"\r\n") for _ in range(3)]
    assert replies == [REPLY_TIMEOUT, REPLY_TIMEOUT, b"SERVER_ERROR 307 busy\r\n"]
