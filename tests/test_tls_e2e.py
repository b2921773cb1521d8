"""Native TLS end to end: real proxies (started through the CLI), real memcached, trustme CAs.

The edge pair is the deployment the feature exists for::

    client --plain--> proxy A --TLS (mTLS, --pem-*)--> proxy B (--ssl-port) --plain--> memcached

plus proxy A talking TLS straight to ``memcached -Z``. A `RecordingRelay` (a TCP forwarder
that keeps every byte) sits between A and its TLS server where a test needs to look at the
wire or break the connection without restarting anything.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from _pki import Pki, leaf_serial, make_pki, replace_file
from conftest import Client, Memcached, Proxy, poll, pool_config
from cryptography import x509

from mcrouter_trio import SERVER_VERSION

ProxyFactory = Callable[..., Proxy]
MemcachedFactory = Callable[..., Memcached]

DEADLINE = 10.0
STORED = b"STORED\r\n"


# --- certificates ----------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def rogue(tmp_path: Path) -> Pki:
    """An unrelated CA: its certificates must be refused everywhere."""
    return make_pki(tmp_path / "rogue")


def serial(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --- clients, relay, polling -----------------------------------------------------------------


class TLSClient(Client):
    def __init__(self, port: int, context: ssl.SSLContext, timeout: float = 5.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""

    def peer_serial(self) -> int:
        assert isinstance(self.sock, ssl.SSLSocket)
        return serial(self.sock.getpeercert(binary_form=True))


def get(client: Client, key: bytes) -> bytes | None:
    """The value of `key` (any bytes, exact length), or None on a miss."""
    header = client.call(b"get " + key + b"\r\n")
    if header == b"END\r\n":
        return None
    match = re.fullmatch(rb"VALUE (\S+) \d+ (\d+)\r\n", header)
    assert match, header
    value = client.read_exactly(int(match[2]) + 2)[:-2]
    assert client.read_until(b"\r\n") == b"END\r\n"
    return value


def set_(client: Client, key: bytes, value: bytes) -> bytes:
    return client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))


def wait_for_log_line(proxy: Proxy, pattern: str) -> str:
    found: list[str] = []

    def check() -> bool:
        found[:] = [line for line in proxy.log().splitlines() if re.search(pattern, line)]
        return bool(found)

    assert poll(check, DEADLINE), f"no log line matching {pattern!r} in:\n{proxy.log()}"
    return found[0]


class RecordingRelay:
    """A TCP forwarder to `target_port` that records every byte, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.accepted += 1
                self._sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.recorded += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(sink)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def recording(self) -> bytes:
        """Everything relayed so far, both directions interleaved."""
        with self._lock:
            return bytes(self.recorded)

    def drop_connections(self) -> None:
        """Break every relayed connection (both ends see a reset or EOF); keep listening."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._close(sock)

    def close(self) -> None:
        self.listener.close()
        self.drop_connections()


@pytest.fixture
def relay_factory() -> Iterator[Callable[[int], RecordingRelay]]:
    relays: list[RecordingRelay] = []

    def start(target_port: int) -> RecordingRelay:
        relay = RecordingRelay(target_port)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.close()


# --- proxies ---------------------------------------------------------------------------------


def ssl_pool(address: str, **pool: Any) -> dict[str, Any]:
    return {"pools": {"B": {"servers": [address], "use_ssl": True, **pool}}, "route": "PoolRoute|B"}


def start_edge_b(proxy_factory: ProxyFactory, pki: Pki, memcached: Memcached, *extra: str) -> Proxy:
    """Proxy B: TLS only (no -p), mutual TLS required, in front of plain memcached."""
    config = {"pools": {"M": {"servers": [memcached.address]}}, "route": "PoolRoute|M"}
    return proxy_factory(config, *pki.server_flags(), *extra, plain=False, tls=True)


def server_stats(proxy_port: int, address: str) -> dict[str, int]:
    """The numeric fields of proxy's `stats servers` line for `address`."""
    with closing(Client(proxy_port)) as client:
        reply = client.call(b"stats servers\r\n", b"END\r\n")
    for line in reply.decode().splitlines():
        if line.startswith(f"STAT {address}:"):
            return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line.split(" ", 2)[2])}
    raise AssertionError(f"{address} not in {reply!r}")


def memcached_tls_args(pki: Pki, *options: str) -> list[str]:
    """memcached -Z requiring a client certificate from `pki`'s CA."""
    settings = [
        f"ssl_chain_cert={pki.server_cert}",
        f"ssl_key={pki.server_key}",
        f"ssl_ca_cert={pki.ca_file}",
        "ssl_verify_mode=2",
        *options,
    ]
    return ["-Z", "-o", ",".join(settings)]


def refused_tls(port: int, context: ssl.SSLContext) -> int:
    """Try a TLS `version`; assert the proxy answers nothing. Returns the client's port."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    local_port: int = raw.getsockname()[1]
    try:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            # With TLS 1.3 the client's side of the handshake ends first; the refusal
            # shows on the first read.
            tls.sendall(b"version\r\n")
            data = tls.recv(100)
    except (ssl.SSLError, OSError):
        return local_port
    finally:
        raw.close()
    assert data == b"", data
    return local_port


# --- a. the edge pair ------------------------------------------------------------------------


def test_edge_pair_round_trip(proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki) -> None:
    b = start_edge_b(proxy_factory, pki, memcached)
    upstream = f"127.0.0.1:{b.tls_port}"
    a = proxy_factory(ssl_pool(upstream, server_name="localhost"), *pki.client_flags())
    binary = bytes(range(256)) * 4  # NUL, CR, LF, 0xff ...
    large = secrets.token_bytes(500 * 1024)
    with closing(Client(a.port)) as client:
        assert set_(client, b"k1", b"hello") == STORED
        assert get(client, b"k1") == b"hello"
        assert set_(client, b"bin", binary) == STORED
        assert get(client, b"bin") == binary
        assert set_(client, b"large", large) == STORED
        assert get(client, b"large") == large
        assert set_(client, b"k2", b"v2") == STORED
        assert client.call(b"get k1 missing k2\r\n", b"END\r\n") == (
            b"VALUE k1 0 5\r\nhello\r\nVALUE k2 0 2\r\nv2\r\nEND\r\n"
        )
        assert client.call(b"delete k1\r\n") == b"DELETED\r\n"
        assert get(client, b"k1") is None
    # The values went through B into the plain memcached behind it ...
    with closing(Client(memcached.port)) as direct:
        assert get(direct, b"large") == large
    # ... over one TLS connection from A.
    assert server_stats(a.port, upstream)["tls_handshakes"] == 1


# --- b. straight to memcached -Z -------------------------------------------------------------


def test_memcached_tls_with_and_without_client_cert(
    proxy_factory: ProxyFactory, memcached_factory: MemcachedFactory, pki: Pki
) -> None:
    server = memcached_factory(*memcached_tls_args(pki))
    # The server-string form of the mech this time.
    config = {"pools": {"M": {"servers": [f"{server.address}:ascii:ssl"]}}, "route": "PoolRoute|M"}
    with_cert = proxy_factory(config, *pki.client_flags())
    with closing(Client(with_cert.port)) as client:
        assert set_(client, b"k", b"over tls") == STORED
        assert get(client, b"k") == b"over tls"
        assert client.call(b"delete k\r\n") == b"DELETED\r\n"

    without_cert = proxy_factory(config, "--pem-ca-path", str(pki.ca_file), "--ssl-verify-peers")
    with closing(Client(without_cert.port, timeout=DEADLINE)) as client:
        for _ in range(2):  # an error reply each time, never a hang
            reply = client.call(b"get k\r\n")
            assert re.fullmatch(rb"SERVER_ERROR [^\r\n]+\r\n", reply), reply
    # memcached sends a "certificate required" alert and closes; whether the alert or the
    # reset caused by the request written meanwhile arrives first is up to timing.
    wait_for_log_line(
        without_cert,
        rf"server {server.address}: closing connection: .*(certificate required|reset|EOF)",
    )


# --- c. refusals at the TLS listener ---------------------------------------------------------


def test_refused_handshakes_are_logged_and_others_served(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki, rogue: Pki
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached, "--ssl-handshake-timeout", "1")
    refused = r"TLS handshake from 127\.0\.0\.1:{} refused: "
    good = TLSClient(b.tls_port, pki.client_context())
    assert set_(good, b"k", b"v") == STORED
    silent = socket.create_connection(("127.0.0.1", b.tls_port), timeout=DEADLINE)

    port = refused_tls(b.tls_port, pki.client_context(cert=False))
    wait_for_log_line(b, refused.format(port) + "peer did not return a certificate")
    assert get(good, b"k") == b"v"

    other_ca_cert = pki.client_context(cert=False)
    other_ca_cert.load_cert_chain(rogue.client_cert, rogue.client_key)
    port = refused_tls(b.tls_port, other_ca_cert)
    wait_for_log_line(
        b, refused.format(port) + "client certificate rejected: certificate verify failed"
    )
    assert get(good, b"k") == b"v"

    with socket.create_connection(("127.0.0.1", b.tls_port), timeout=DEADLINE) as plain:
        plain.sendall(b"version\r\n")
        try:
            answer = plain.recv(100)
        except ConnectionError:
            answer = b""
        assert answer == b""
        port = plain.getsockname()[1]
    wait_for_log_line(b, refused.format(port) + r"not a TLS client \(plaintext on a TLS port\?\)")

    # The silent client was connected all along; the handshake timeout ends it.
    port = silent.getsockname()[1]
    with suppress(ConnectionError):
        assert silent.recv(100) == b""
    silent.close()
    wait_for_log_line(b, refused.format(port) + "not completed within 1 s")

    assert get(good, b"k") == b"v"
    with closing(TLSClient(b.tls_port, pki.client_context())) as late:
        assert get(late, b"k") == b"v"
        stats = late.call(b"stats\r\n", b"END\r\n")
    good.close()
    assert b.process.poll() is None
    # Two clients served; no certificate, another CA, plaintext and silence refused.
    assert b"STAT ssl_handshakes 2\r\n" in stats, stats
    assert b"STAT ssl_handshakes_refused 4\r\n" in stats, stats


def test_client_sessions_resume_at_the_tls_listener(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached)
    context = pki.client_context()
    with closing(TLSClient(b.tls_port, context)) as first:
        assert first.call(b"version\r\n").startswith(b"VERSION")  # TLS 1.3 tickets come now
        assert isinstance(first.sock, ssl.SSLSocket)
        session = first.sock.session
    raw = socket.create_connection(("127.0.0.1", b.tls_port), timeout=DEADLINE)
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as again:
        assert again.session_reused
        again.sendall(b"stats\r\n")
        stats = b""
        while not stats.endswith(b"END\r\n"):
            stats += again.recv(65536)
    assert b"STAT ssl_handshakes 2\r\n" in stats, stats
    assert b"STAT ssl_handshakes_resumed 1\r\n" in stats, stats
    assert b"STAT ssl_handshakes_refused 0\r\n" in stats, stats


@pytest.mark.parametrize("tls13_only", [False, True], ids=["default", "tls13-only"])
def test_tls_version_floor_downstream(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki, tls13_only: bool
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached, *(["--tls13-only"] if tls13_only else []))
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    if tls13_only:
        port = refused_tls(b.tls_port, tls12)
        wait_for_log_line(b, rf"TLS handshake from 127\.0\.0\.1:{port} refused: .*protocol")
    else:
        with closing(TLSClient(b.tls_port, tls12)) as client:
            assert client.call(b"version\r\n").startswith(b"VERSION")
            assert isinstance(client.sock, ssl.SSLSocket)
            assert client.sock.version() == "TLSv1.2"
    with closing(TLSClient(b.tls_port, pki.client_context())) as client:
        assert client.call(b"version\r\n").startswith(b"VERSION")
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() == "TLSv1.3"


@pytest.fixture
def tls12_server(pki: Pki) -> Iterator[int]:
    """A TLS 1.2-only stand-in for memcached that misses every get."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    while data := tls.recv(65536):
                        tls.sendall(b"END\r\n" * data.count(b"\r\n"))
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("tls13_only", [False, True], ids=["default", "tls13-only"])
def test_tls_version_floor_upstream(
    proxy_factory: ProxyFactory, tls12_server: int, tls13_only: bool
) -> None:
    config = ssl_pool(f"127.0.0.1:{tls12_server}")
    a = proxy_factory(config, *(["--tls13-only"] if tls13_only else []))
    with closing(Client(a.port)) as client:
        reply = client.call(b"get k\r\n")
    assert reply == (b"SERVER_ERROR connection error\r\n" if tls13_only else b"END\r\n")


# --- upstream verification: chain always, host name only with server_name --------------------


@pytest.mark.parametrize(
    ("server_name", "trust", "verify", "works"),
    [
        (None, "pki", True, True),  # chain only, as mcrouter: the host 127.0.0.1 is not in it
        ("b.internal", "pki", True, True),
        ("wrong.internal", "pki", True, False),
        (None, "rogue", True, False),
        ("wrong.internal", "rogue", False, True),  # no --ssl-verify-peers: encrypted only
    ],
)
def test_upstream_verification(
    proxy_factory: ProxyFactory,
    memcached: Memcached,
    tmp_path: Path,
    rogue: Pki,
    server_name: str | None,
    trust: str,
    verify: bool,
    works: bool,
) -> None:
    named = make_pki(tmp_path / "named", "b.internal")  # no IP address in the certificate
    b = start_edge_b(proxy_factory, named, memcached)
    pool = {} if server_name is None else {"server_name": server_name}
    ca = named.ca_file if trust == "pki" else rogue.ca_file
    flags = ["--pem-cert-path", str(named.client_cert), "--pem-key-path", str(named.client_key)]
    if verify:
        flags += ["--pem-ca-path", str(ca), "--ssl-verify-peers"]
    a = proxy_factory(ssl_pool(f"127.0.0.1:{b.tls_port}", **pool), *flags)
    with closing(Client(a.port)) as client:
        reply = client.call(b"get k\r\n")
    if works:
        assert reply == b"END\r\n"
    else:
        assert reply == b"SERVER_ERROR connection error\r\n"
        wait_for_log_line(a, r"connect failed: certificate verify failed")


# --- d. nothing readable on the wire ---------------------------------------------------------


def test_relay_sees_neither_key_nor_value(
    proxy_factory: ProxyFactory,
    memcached: Memcached,
    pki: Pki,
    relay_factory: Callable[[int], RecordingRelay],
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached)
    relay = relay_factory(b.tls_port)
    a = proxy_factory(ssl_pool(relay.address, server_name="localhost"), *pki.client_flags())
    key = secrets.token_hex(16).encode()
    value = secrets.token_hex(16).encode()
    with closing(Client(a.port)) as client:
        assert set_(client, key, value) == STORED
        assert get(client, key) == value
        assert client.call(b"get %s %s\r\n" % (key, key), b"END\r\n").count(value) == 2
    recorded = relay.recording()
    assert relay.accepted == 1
    assert len(recorded) > 1000  # handshake and records did pass through
    assert recorded[:1] == b"\x16"  # a TLS handshake record, not a memcached command
    assert b"localhost" in recorded  # SNI is sent (the ClientHello is not encrypted)
    assert key not in recorded
    assert value not in recorded
    # Sanity check of the method: the same exchange in plain text shows both.
    plain_relay = relay_factory(memcached.port)
    plain = proxy_factory(pool_config(plain_relay.address))
    with closing(Client(plain.port)) as client:
        assert get(client, key) == value
    assert key in plain_relay.recording()
    assert value in plain_relay.recording()


# --- e. certificate rotation -----------------------------------------------------------------


def test_rotation_without_restart(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    first = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="cert one")
    second = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="cert two")
    pki.install_server_cert(first)
    config = {"pools": {"M": {"servers": [memcached.address]}}, "route": "PoolRoute|M"}
    b = proxy_factory(
        config,
        # mcrouter's names for the same flags
        "--server-pem-cert-path", str(pki.server_cert),
        "--server-pem-key-path", str(pki.server_key),
        "--server-pem-ca-path", str(pki.ca_file),
        "--ssl-require-peer-certs",
        "--tls-reload-interval", "0.2",
        tls=True,
    )  # fmt: skip
    upstream = f"127.0.0.1:{b.tls_port}"
    a = proxy_factory(ssl_pool(upstream), *pki.client_flags())
    pid = b.process.pid

    def new_connection_serial() -> int:
        with closing(TLSClient(b.tls_port, pki.client_context())) as client:
            assert client.call(b"version\r\n").startswith(b"VERSION")
            return client.peer_serial()

    existing = TLSClient(b.tls_port, pki.client_context())
    assert existing.peer_serial() == leaf_serial(first)
    assert set_(existing, b"k", b"before") == STORED
    with closing(Client(a.port)) as via_a:
        assert get(via_a, b"k") == b"before"

    # A broken replacement is refused and the old certificate stays in use.
    replace_file(pki.server_cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    wait_for_log_line(b, "TLS reload from .* failed, keeping the previous certificates")
    assert new_connection_serial() == leaf_serial(first)

    pki.install_server_cert(second)
    assert poll(lambda: new_connection_serial() == leaf_serial(second), DEADLINE), (
        "cert two never served"
    )
    wait_for_log_line(b, "reloaded TLS material")

    # The open connections carry on: the client's, and A's upstream one.
    assert existing.peer_serial() == leaf_serial(first)
    assert set_(existing, b"k", b"after") == STORED
    with closing(Client(a.port)) as via_a:
        assert get(via_a, b"k") == b"after"
    assert server_stats(a.port, upstream)["connects"] == 1
    existing.close()
    assert b.process.poll() is None
    assert b.process.pid == pid


# --- f. session resumption on reconnect ------------------------------------------------------


def reconnected(proxy_port: int, key: bytes) -> bool:
    """Whether a get through the proxy works (the first one after a break may fail)."""
    with closing(Client(proxy_port)) as client:
        return not client.call(b"get " + key + b"\r\n").startswith(b"SERVER_ERROR")


@pytest.mark.parametrize("target", ["proxy", "memcached-session-cache", "memcached-no-cache"])
def test_reconnect_resumes_tls_session(
    proxy_factory: ProxyFactory,
    memcached_factory: MemcachedFactory,
    pki: Pki,
    relay_factory: Callable[[int], RecordingRelay],
    target: str,
) -> None:
    if target == "proxy":
        b = start_edge_b(proxy_factory, pki, memcached_factory())
        relay = relay_factory(b.tls_port)
    else:
        cache = ["ssl_session_cache"] if target == "memcached-session-cache" else []
        relay = relay_factory(memcached_factory(*memcached_tls_args(pki, *cache)).port)
    a = proxy_factory(ssl_pool(relay.address), *pki.client_flags())
    key = b"resume-me"
    with closing(Client(a.port)) as client:
        assert set_(client, key, b"v") == STORED
    assert server_stats(a.port, relay.address)["tls_handshakes"] == 1

    # Break the connection without restarting the server (a restart loses its ticket keys
    # and session cache, so nothing could be resumed).
    for expected_handshakes in (2, 3):
        relay.drop_connections()
        assert poll(lambda: reconnected(a.port, key), DEADLINE)
        stats = server_stats(a.port, relay.address)
        assert stats["tls_handshakes"] == expected_handshakes
        if target == "memcached-no-cache":
            # memcached 1.6.18 fails resumed handshakes without its session cache; the proxy
            # falls back to a full handshake and stops offering sessions.
            assert stats["tls_resumed"] == 0
        else:
            assert stats["tls_resumed"] == expected_handshakes - 1
    if target == "memcached-no-cache":
        wait_for_log_line(a, "no longer resuming TLS sessions")
    else:
        wait_for_log_line(a, r"TLSv1\.3 handshake \(resumed session\)")


# --- g. a real TLS client ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_gets_version(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached)
    result = subprocess.run(
        [
            "openssl", "s_client", "-connect", f"127.0.0.1:{b.tls_port}", "-quiet",
            "-servername", "localhost", "-verify_return_error", "-CAfile", str(pki.ca_file),
            "-cert", str(pki.client_cert), "-key", str(pki.client_key),
        ],
        input=b"version\r\nquit\r\n",
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )  # fmt: skip
    assert result.stdout.startswith(f"VERSION {SERVER_VERSION}\r\n".encode()), result


# --- TLS clients under back-pressure ---------------------------------------------------------


def _value_reply(key: bytes, value: bytes) -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def test_tls_client_that_stops_reading_gets_every_reply_later(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached)
    values = {b"tbig%d" % i: secrets.token_bytes(100_000) for i in range(4)}
    with closing(TLSClient(b.tls_port, pki.client_context(), timeout=30)) as client:
        for key, value in values.items():
            assert set_(client, key, value) == STORED
        keys = [b"tbig%d" % (i % 4) for i in range(200)]  # ~20 MB of replies
        expected = b"".join(_value_reply(key, values[key]) for key in keys)
        client.send(b"".join(b"get %s\r\n" % key for key in keys))
        time.sleep(1.0)  # encrypted replies fill every buffer on the way back
        with closing(TLSClient(b.tls_port, pki.client_context())) as other:
            assert get(other, b"tbig1") == values[b"tbig1"]  # others are still served
        assert client.read_exactly(len(expected)) == expected
        assert client.call(b"version\r\n").startswith(b"VERSION ")


def test_tls_pipeline_over_the_outstanding_limit_is_answered_in_order(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    b = start_edge_b(proxy_factory, pki, memcached, "--max-client-outstanding-reqs", "4")
    requests = []
    replies = []
    for i in range(300):
        key, value = b"tp%d" % (i % 13), b"value-%d" % i
        requests.append(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key))
        replies.append(b"STORED\r\n" + _value_reply(key, value))
    with closing(TLSClient(b.tls_port, pki.client_context(), timeout=20)) as client:
        client.send(b"".join(requests) + b"quit\r\n")
        expected = b"".join(replies)
        assert client.read_exactly(len(expected)) == expected
        assert client.read_for(2) == b"<CLOSED>"


def test_request_in_the_same_segment_as_the_handshake_end_is_answered(
    proxy_factory: ProxyFactory, memcached: Memcached, pki: Pki
) -> None:
    # A TLS 1.3 client may send its first request right behind its Finished message;
    # the proxy then reads both at once and must not wait for the socket to say more.
    b = start_edge_b(proxy_factory, pki, memcached)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", b.tls_port), timeout=5) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"version\r\n")
        sock.sendall(outgoing.read())  # client Finished and the request: one segment
        reply = b""
        while not reply.endswith(b"\r\n"):
            incoming.write(sock.recv(65536))
            with contextlib.suppress(ssl.SSLWantReadError):
                reply += tls.read(65536)
    assert reply.startswith(b"VERSION ")


def test_concurrent_clients_get_their_own_replies_from_batched_gets(
    proxy_factory: ProxyFactory, memcached_factory: MemcachedFactory, pki: Pki
) -> None:
    # To TLS servers, the gets routed in one pass leave as one multi-key get: many
    # clients at once make such batches, mixing hits and misses, and each client
    # must get exactly the reply its own get would have had.
    server = memcached_factory(*memcached_tls_args(pki))
    proxy = proxy_factory(ssl_pool(server.address), *pki.client_flags())
    with closing(Client(proxy.port)) as client:
        for i in range(0, 40, 2):  # odd keys stay missing
            assert set_(client, b"batch:%d" % i, b"value of %d" % i * (i % 7)) == STORED
    failures: list[str] = []

    def run(worker: int) -> None:
        with closing(Client(proxy.port)) as client:
            for round_ in range(60):
                i = (worker * 7 + round_) % 40
                expected = None if i % 2 else b"value of %d" % i * (i % 7)
                got = get(client, b"batch:%d" % i)
                if got != expected:
                    failures.append(f"worker {worker}: batch:{i} gave {got!r}")
                    return

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    stats = server_stats(proxy.port, server.address)
    assert stats["requests"] == stats["replies"] == 20 + 16 * 60
    assert stats["get_batches"] > 0  # 16 clients at once: gets did share batches
