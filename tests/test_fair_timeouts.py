"""Fair reply timeouts on a server connection shared by heavy and light clients.

A request's timeout runs while its server keeps it waiting in silence: from the
write that carried it, and from the last byte the server sent. A client moving
megabytes through the shared connection therefore cannot make a light client's
request time out, while a server that stops sending still does, mid-reply too.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from conftest import Client, Conn, FaultServer, Memcached, Proxy, connect, poll, pool_config
from test_faults import REPLY_TIMEOUT, get_key, get_reply, proxy_alive

ProxyFactory = Callable[..., Proxy]

#: Short enough that the heavy traffic below keeps a light request waiting longer.
SHORT_TIMEOUT_MS = 200
BIG = 1024 * 1024
MULTIGET_KEYS = 50_000


def preload_small_keys(server: Memcached) -> list[bytes]:
    """Store MULTIGET_KEYS small items straight into memcached; their keys."""
    keys = [b"m%d" % i for i in range(MULTIGET_KEYS)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"".join(b"set %s 0 0 40 noreply\r\n%s\r\n" % (key, b"v" * 40) for key in keys)
        )
        sock.sendall(b"mn\r\n")
        reply = b""
        while not reply.endswith(b"MN\r\n"):
            reply += sock.recv(65536)
    return keys


def run_heavy_client(port: int, keys: list[bytes], rounds: int, problems: list[bytes]) -> None:
    """1 MB sets and gets, pipelined, then a 50 000-key multi-get, `rounds` times."""
    try:
        heavy_rounds(port, keys, rounds, problems)
    except OSError as exc:  # ConnectionError, TimeoutError
        problems.append(repr(exc).encode())


def heavy_rounds(port: int, keys: list[bytes], rounds: int, problems: list[bytes]) -> None:
    """Each round: four 1 MB sets and four gets in one pipeline, then the multi-get."""
    values = [bytes([65 + i]) * BIG for i in range(4)]
    sets = b"".join(b"set big%d 0 0 %d\r\n%s\r\n" % (i, BIG, v) for i, v in enumerate(values))
    gets = b"".join(b"get big%d\r\n" % i for i in range(len(values)))
    multiget = b"get " + b" ".join(keys) + b"\r\n"
    blocks = b"".join(b"VALUE %s 0 40\r\n%s\r\n" % (k, b"v" * 40) for k in keys)
    expected_multiget = blocks + b"END\r\n"
    with connect(port, timeout=60) as heavy:
        for _ in range(rounds):
            heavy.send(sets + gets)
            for _ in values:
                line = heavy.read_until(b"\r\n")
                if line != b"STORED\r\n":
                    problems.append(line)
            for i, value in enumerate(values):
                reply = read_get_reply(heavy)
                if reply != b"VALUE big%d 0 %d\r\n%s\r\nEND\r\n" % (i, BIG, value):
                    problems.append(reply[:80])
            heavy.send(multiget)
            reply = read_get_reply(heavy)
            if reply != expected_multiget:
                problems.append(reply[:80])


def read_get_reply(client: Client) -> bytes:
    """A get's whole reply (VALUE blocks and END) or its error line.

    Reads up to the first END: none of this test's values holds one.
    """
    line = client.read_until(b"\r\n")
    return line + client.read_until(b"END\r\n") if line.startswith(b"VALUE ") else line


def test_a_heavy_client_never_makes_a_light_clients_request_time_out(
    memcached_factory: Callable[..., Memcached], proxy_factory: ProxyFactory
) -> None:
    memcached = memcached_factory("-I", "2m")  # room for 1 MB values and their headers
    keys = preload_small_keys(memcached)
    proxy = proxy_factory(pool_config(memcached.address, server_timeout=SHORT_TIMEOUT_MS))
    with connect(proxy.port) as light:
        assert light.call(b"set small 0 0 5\r\nhello\r\n") == b"STORED\r\n"
        heavy_problems: list[bytes] = []
        heavy = threading.Thread(
            target=run_heavy_client, args=(proxy.port, keys, 3, heavy_problems)
        )
        heavy.start()
        light_replies: list[bytes] = []
        while heavy.is_alive():
            light.send(b"get small\r\n")
            light_replies.append(read_get_reply(light))
        heavy.join()
    assert len(light_replies) > 1  # the light client was served while the heavy one ran
    assert [r for r in light_replies if r != b"VALUE small 0 5\r\nhello\r\nEND\r\n"] == []
    assert heavy_problems == []
    assert "reply timeout" not in proxy.log(), proxy.log()[-2000:]
    proxy_alive(proxy)


# -- servers that stop sending -------------------------------------------------------


def answers_until(silent_key: bytes) -> Callable[[Conn], None]:
    """Answer gets honestly until `silent_key` is asked for; then say nothing more."""

    def handler(conn: Conn) -> None:
        while (line := conn.readline()) is not None:
            key = get_key(line)
            if key == silent_key:
                conn.wait_closed()
                return
            if not conn.send(get_reply(key)):
                return

    return handler


def trickling(chunks: int, pause: float, stall_after: int | None = None) -> Callable[[Conn], None]:
    """Answer each get with a value sent in `chunks` pieces `pause` apart.

    With `stall_after`, the reply stops after that many pieces and nothing more comes.
    """

    def handler(conn: Conn) -> None:
        while (line := conn.readline()) is not None:
            reply = trickled_reply(get_key(line), chunks)
            size = -(-len(reply) // chunks)
            for index in range(chunks):
                if index == stall_after:
                    conn.wait_closed()
                    return
                if not conn.send(reply[index * size : (index + 1) * size]):
                    return
                time.sleep(pause)

    return handler


def trickled_reply(key: bytes, chunks: int) -> bytes:
    value = b"t" * (chunks * 1000)
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def test_a_server_that_goes_silent_after_answering_others_still_times_out(
    fault_server: Callable[[Callable[[Conn], None]], FaultServer], proxy_factory: ProxyFactory
) -> None:
    backend = fault_server(answers_until(b"hang"))
    proxy = proxy_factory(pool_config(backend.address), "-t", str(SHORT_TIMEOUT_MS))
    with connect(proxy.port) as client:
        client.send(b"get a\r\nget b\r\nget hang\r\nget c\r\n")
        assert client.read_until(b"END\r\n") == get_reply(b"a")
        assert client.read_until(b"END\r\n") == get_reply(b"b")
        assert [client.read_until(b"\r\n") for _ in range(2)] == [REPLY_TIMEOUT] * 2
    proxy_alive(proxy)


def test_a_reply_trickling_in_longer_than_the_timeout_is_delivered(
    fault_server: Callable[[Callable[[Conn], None]], FaultServer], proxy_factory: ProxyFactory
) -> None:
    # 12 pieces 60 ms apart: the reply takes over three timeouts, but no gap is one.
    backend = fault_server(trickling(chunks=12, pause=0.06))
    proxy = proxy_factory(pool_config(backend.address), "-t", str(SHORT_TIMEOUT_MS))
    with connect(proxy.port) as client:
        client.send(b"get slow\r\n")
        assert read_get_reply(client) == trickled_reply(b"slow", 12)
        client.send(b"get again\r\n")
        assert read_get_reply(client) == trickled_reply(b"again", 12)
    assert backend.count("accept") == 1  # the connection was never closed
    proxy_alive(proxy)


def test_a_reply_that_stalls_midway_times_out(
    fault_server: Callable[[Callable[[Conn], None]], FaultServer], proxy_factory: ProxyFactory
) -> None:
    backend = fault_server(trickling(chunks=12, pause=0.06, stall_after=5))
    proxy = proxy_factory(pool_config(backend.address), "-t", str(SHORT_TIMEOUT_MS))
    with connect(proxy.port) as client:
        client.send(b"get stalls\r\nget behind\r\n")
        assert read_lines(client, 2) == [REPLY_TIMEOUT] * 2
        assert poll(lambda: backend.has("eof", 0))  # the half-read stream was abandoned
    proxy_alive(proxy)


def read_lines(client: Client, count: int) -> list[bytes]:
    return [client.read_until(b"\r\n") for _ in range(count)]
