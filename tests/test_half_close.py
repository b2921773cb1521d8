"""A client that half-closes (shutdown(SHUT_WR), `nc -N`) still gets every reply.

EOF on a client's read side ends its input, not its session: every request read
before it is answered and flushed, and only then does the proxy close. The tests
compare with memcached itself, which answers everything in the same situation.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _pki import Pki, make_pki
from conftest import Memcached, Proxy, pool_config

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

COUNT = 200


def pipeline() -> bytes:
    """200 sets then 200 gets of the same keys: 200 STORED, 200 hits, 200 ENDs."""
    sets = b"".join(
        b"set hc%d 0 0 %d\r\nvalue-%d\r\n" % (i, len(b"value-%d" % i), i) for i in range(COUNT)
    )
    gets = b"".join(b"get hc%d\r\n" % i for i in range(COUNT))
    return sets + gets


def expected_replies() -> bytes:
    stored = b"STORED\r\n" * COUNT
    hits = b"".join(
        b"VALUE hc%d 0 %d\r\nvalue-%d\r\nEND\r\n" % (i, len(b"value-%d" % i), i)
        for i in range(COUNT)
    )
    return stored + hits


def send_then_half_close(sock: socket.socket, request: bytes) -> bytes:
    """Send everything, shut down the write side, read until the server closes."""
    sock.settimeout(10)
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_half_closed_client_gets_every_reply_like_memcached(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    direct = send_then_half_close(
        socket.create_connection(("127.0.0.1", memcached.port)), pipeline()
    )
    assert direct == expected_replies()
    proxy = proxy_factory(pool_config(memcached.address))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            assert send_then_half_close(sock, pipeline()) == expected_replies()


def test_half_close_after_a_partial_request_answers_the_complete_ones(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        reply = send_then_half_close(
            sock, b"set part 0 0 2\r\nok\r\nget part\r\nset part 0 0 9\r\nhalf"
        )
    assert reply == b"STORED\r\nVALUE part 0 2\r\nok\r\nEND\r\n"


def test_half_close_over_the_outstanding_limit_answers_everything(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """Requests held back by --max-client-outstanding-reqs are still routed after EOF."""
    proxy = proxy_factory(pool_config(memcached.address), "--max-client-outstanding-reqs", "3")
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        assert send_then_half_close(sock, pipeline()) == expected_replies()


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_proxy(proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki) -> Proxy:
    return proxy_factory(pool_config(memcached.address), *pki.server_flags(), plain=False, tls=True)


def test_edge_pair_answers_a_half_closed_client(
    memcached: Memcached, proxy_factory: ProxyFactory, pki: Pki
) -> None:
    """client --plain--> A --TLS--> B --plain--> memcached, the client half-closing at A."""
    b = tls_proxy(proxy_factory, memcached, pki)
    upstream = {"servers": [f"127.0.0.1:{b.tls_port}"], "use_ssl": True, "server_name": "localhost"}
    a = proxy_factory({"pools": {"B": upstream}, "route": "PoolRoute|B"}, *pki.client_flags())
    with socket.create_connection(("127.0.0.1", a.port)) as sock:
        assert send_then_half_close(sock, pipeline()) == expected_replies()


def test_tls_client_that_closes_its_write_side_gets_every_reply(
    memcached: Memcached, proxy_factory: ProxyFactory, pki: Pki
) -> None:
    """Plain EOF under TLS (the client shuts down TCP without close_notify)."""
    proxy = tls_proxy(proxy_factory, memcached, pki)
    raw = socket.create_connection(("127.0.0.1", proxy.tls_port), timeout=10)
    with pki.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(pipeline())
        # A TCP half-close under the TLS layer (SSLSocket.shutdown would drop TLS itself).
        with socket.socket(fileno=os.dup(sock.fileno())) as same_socket:
            same_socket.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received == expected_replies()


def test_tls_close_notify_ends_input_but_replies_still_arrive(
    memcached: Memcached, proxy_factory: ProxyFactory, pki: Pki
) -> None:
    """close_notify with the requests: TLS 1.3 lets the proxy write after receiving it."""
    proxy = tls_proxy(proxy_factory, memcached, pki)
    context = pki.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", proxy.tls_port), timeout=10) as sock:
        _bio_handshake(tls, sock, incoming, outgoing)
        tls.write(pipeline())
        with pytest.raises(ssl.SSLWantReadError):
            tls.unwrap()  # sends close_notify; the proxy's comes later
        sock.sendall(outgoing.read())
        received = b""
        while raw := sock.recv(65536):
            incoming.write(raw)
            received += _bio_read_all(tls)
    assert received == expected_replies()


def _bio_handshake(
    tls: ssl.SSLObject, sock: socket.socket, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
) -> None:
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
            continue
        sock.sendall(outgoing.read())
        return


def _bio_read_all(tls: ssl.SSLObject) -> bytes:
    out = b""
    while True:
        try:
            chunk = tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            return out
        if not chunk:
            return out
        out += chunk


# -- scripts -------------------------------------------------------------------------------


def test_setkey_loop_piped_into_nc_stores_and_reports_every_key(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """The seed article's setkey.sh: a shell loop of sets piped into `nc -N`."""
    if shutil.which("nc") is None:
        pytest.skip("nc is not installed: apt-get install -y netcat-openbsd")
    proxy = proxy_factory(pool_config(memcached.address))
    total = 10_000
    script = (
        f'for i in $(seq 1 {total}); do printf "set key$i 0 0 4\\r\\ntest\\r\\n"; done'
        f" | nc -N 127.0.0.1 {proxy.port}"
    )
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stderr, time.monotonic() - started)
    assert done.stdout == b"STORED\r\n" * total
