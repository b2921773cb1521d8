"""Real loopback handshakes against contexts from ``mcrouter_trio.tls``.

The server side is a tiny Trio echo server that asks for its context on every accept, the way
the proxy's listener uses ``ReloadingContext.context``; clients are Trio ``SSLStream``s, so the
tests also pin down the Trio details the proxy relies on (``stream.session`` forwarding, a
TLS 1.3 client only seeing a rejected certificate on its first read).
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
from _pki import Pki, leaf_serial, make_pki, replace_file
from cryptography import x509

from mcrouter_trio.tls._contexts import (
    ClientTLSSettings,
    ReloadingContext,
    ServerTLSSettings,
    SessionCache,
    build_client_context,
    build_server_context,
)

HOST = "127.0.0.1"
TIMEOUT = 5


@attrs.define
class EchoServer:
    """Echoes bytes over TLS; records why each failed connection failed."""

    context: Callable[[], ssl.SSLContext]
    errors: list[BaseException] = attrs.Factory(list)
    port: int = 0

    async def handle(self, tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, self.context(), server_side=True)
        try:
            with trio.fail_after(TIMEOUT):
                await stream.do_handshake()
            while data := await stream.receive_some():
                await stream.send_all(data)
        except trio.BrokenResourceError as exc:
            self.errors.append(exc.__cause__ or exc)
        finally:
            await trio.aclose_forcefully(stream)


async def start_server(nursery: trio.Nursery, context: Callable[[], ssl.SSLContext]) -> EchoServer:
    server = EchoServer(context)
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host=HOST))
    server.port = listeners[0].socket.getsockname()[1]
    return server


@attrs.frozen
class Exchange:
    """What a client saw on one successful connection."""

    server_serial: int
    version: str
    session_reused: bool
    session: ssl.SSLSession | None


async def receive_exactly(stream: trio.SSLStream[trio.SocketStream], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise EOFError("server closed the connection")
        data += chunk
    return data


async def echo_once(stream: trio.SSLStream[trio.SocketStream]) -> None:
    with trio.fail_after(TIMEOUT):
        await stream.send_all(b"ping")
        assert await receive_exactly(stream, 4) == b"ping"


async def open_client(
    port: int,
    ctx: ssl.SSLContext,
    *,
    hostname: str = "localhost",
    session: ssl.SSLSession | None = None,
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(HOST, port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=hostname)
    if session is not None:
        stream.session = session  # forwarded to the SSLObject; must precede the handshake
    return stream


def serial_of(stream: trio.SSLStream[trio.SocketStream]) -> int:
    der: bytes = stream.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def exchange(
    port: int,
    ctx: ssl.SSLContext,
    *,
    hostname: str = "localhost",
    session: ssl.SSLSession | None = None,
) -> Exchange:
    """Handshake, echo one message (so TLS 1.3 failures and tickets arrive), close."""
    stream = await open_client(port, ctx, hostname=hostname, session=session)
    try:
        with trio.fail_after(TIMEOUT):
            await stream.do_handshake()
        await echo_once(stream)
        new_session: ssl.SSLSession | None = stream.session
        result = Exchange(serial_of(stream), stream.version(), stream.session_reused, new_session)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await stream.aclose()  # with close_notify, so the server logs no error
    return result


async def refused(port: int, ctx: ssl.SSLContext, *, hostname: str = "localhost") -> str:
    """Expect the connection to fail; return the client's SSL error text (lowercase).

    When the *server* rejects the handshake, the client only sees an unexpected EOF: Trio's
    SSLStream raises on the failed handshake without flushing the alert OpenSSL queued, so the
    reason has to be read from ``EchoServer.errors`` instead.
    """
    with pytest.raises(trio.BrokenResourceError) as info:
        await exchange(port, ctx, hostname=hostname)
    return str(info.value.__cause__).lower()


def server_error(server: EchoServer) -> str:
    assert server.errors, "the server saw no failed handshake"
    return str(server.errors[-1]).lower()


@pytest.fixture
def mat(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "a")


@pytest.fixture
def other(tmp_path: Path) -> Pki:
    """An unrelated CA with its own server and client certificates."""
    return make_pki(tmp_path / "b")


def server_settings(m: Pki, **kw: bool) -> ServerTLSSettings:
    return ServerTLSSettings(
        cert_path=m.server_cert, key_path=m.server_key, ca_path=m.ca_file, **kw
    )


def client_ctx(
    m: Pki, *, cert: bool = True, check_hostname: bool = True, tls13_only: bool = False
) -> ssl.SSLContext:
    """A verifying client context trusting ``m``'s CA, with ``m``'s client cert if ``cert``."""
    settings = ClientTLSSettings(
        cert_path=m.client_cert if cert else None,
        key_path=m.client_key if cert else None,
        ca_path=m.ca_file,
        verify_peers=True,
        check_hostname=check_hostname,
        tls13_only=tls13_only,
    )
    return build_client_context(settings)


def tls12_only(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# --- server side: mutual TLS ---------------------------------------------------------------


async def test_mtls_with_right_client_cert(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat, require_peer_certs=True))
    server = await start_server(nursery, lambda: ctx)
    result = await exchange(server.port, client_ctx(mat))
    assert result.version == "TLSv1.3"
    assert result.server_serial == leaf_serial(mat.server_leaf)
    assert server.errors == []


async def test_mtls_over_tls12(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat, require_peer_certs=True))
    server = await start_server(nursery, lambda: ctx)
    assert (await exchange(server.port, tls12_only(client_ctx(mat)))).version == "TLSv1.2"


async def test_missing_client_cert_refused_when_required(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat, require_peer_certs=True))
    server = await start_server(nursery, lambda: ctx)
    # TLS 1.3: the client's handshake completes; the failure arrives on its first read.
    await refused(server.port, client_ctx(mat, cert=False))
    assert "peer did not return a certificate" in server_error(server)


async def test_missing_client_cert_accepted_when_optional(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat))
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    server = await start_server(nursery, lambda: ctx)
    await exchange(server.port, client_ctx(mat, cert=False))
    assert server.errors == []


@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
async def test_client_cert_from_other_ca_refused(
    nursery: trio.Nursery, mat: Pki, other: Pki, require: bool
) -> None:
    # Like mcrouter: a presented client certificate is verified even when it is optional.
    ctx = build_server_context(server_settings(mat, require_peer_certs=require))
    server = await start_server(nursery, lambda: ctx)
    foreign = build_client_context(
        ClientTLSSettings(
            cert_path=other.client_cert,
            key_path=other.client_key,
            ca_path=mat.ca_file,
            verify_peers=True,
        )
    )
    await refused(server.port, foreign)
    assert "certificate verify failed" in server_error(server)


async def test_no_ca_means_no_client_verification(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(
        ServerTLSSettings(cert_path=mat.server_cert, key_path=mat.server_key)
    )
    assert ctx.verify_mode == ssl.CERT_NONE
    server = await start_server(nursery, lambda: ctx)
    await exchange(server.port, client_ctx(mat))


def test_require_peer_certs_needs_a_ca(mat: Pki) -> None:
    with pytest.raises(ValueError, match="ca_path"):
        ServerTLSSettings(
            cert_path=mat.server_cert, key_path=mat.server_key, require_peer_certs=True
        )


# --- server side: protocol versions --------------------------------------------------------


async def test_tls11_client_refused(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    server = await start_server(nursery, lambda: ctx)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 is deprecated
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 refuses to even offer TLS 1.1 at the default security level.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    await refused(server.port, old)
    # The server saw and rejected the offer, so the client really did offer TLS 1.1.
    assert "unsupported protocol" in server_error(server)


async def test_tls13_only_refuses_tls12_client(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat, tls13_only=True))
    server = await start_server(nursery, lambda: ctx)
    await refused(server.port, tls12_only(client_ctx(mat)))
    assert "unsupported protocol" in server_error(server)
    assert (await exchange(server.port, client_ctx(mat))).version == "TLSv1.3"


# --- client side ---------------------------------------------------------------------------


async def test_client_verification(nursery: trio.Nursery, mat: Pki, other: Pki) -> None:
    ctx = build_server_context(
        ServerTLSSettings(cert_path=mat.server_cert, key_path=mat.server_key)
    )
    server = await start_server(nursery, lambda: ctx)
    # Trusting another CA: refused. Not verifying (mcrouter's default): accepted.
    assert "certificate verify failed" in await refused(server.port, client_ctx(other))
    unverified = build_client_context(ClientTLSSettings(ca_path=other.ca_file))
    assert unverified.verify_mode == ssl.CERT_NONE
    await exchange(server.port, unverified)
    # No CA file: the system store, which does not know a private CA.
    system = build_client_context(ClientTLSSettings(verify_peers=True))
    assert "certificate verify failed" in await refused(server.port, system)


async def test_client_hostname_check(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(
        ServerTLSSettings(cert_path=mat.server_cert, key_path=mat.server_key)
    )
    server = await start_server(nursery, lambda: ctx)
    wrong = "db.example"
    assert "hostname mismatch" in await refused(server.port, client_ctx(mat), hostname=wrong)
    # mcrouter semantics: chain trust only.
    await exchange(server.port, client_ctx(mat, check_hostname=False), hostname=wrong)


async def test_client_tls13_only(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = tls12_only(build_server_context(server_settings(mat)))
    server = await start_server(nursery, lambda: ctx)
    await refused(server.port, client_ctx(mat, tls13_only=True))
    assert "unsupported protocol" in server_error(server)


def test_settings_accept_str_paths(mat: Pki) -> None:
    s = ServerTLSSettings(cert_path=str(mat.server_cert), key_path=str(mat.server_key))
    assert s.cert_path == mat.server_cert
    assert s.watched_paths() == (mat.server_cert, mat.server_key)
    with pytest.raises(ValueError, match="cert_path"):
        ClientTLSSettings(key_path=mat.client_key)


# --- rotation ------------------------------------------------------------------------------


async def test_rotation_new_connections_get_new_cert(
    nursery: trio.Nursery, mat: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    holder = ReloadingContext(server_settings(mat, require_peer_certs=True), build_server_context)
    server = await start_server(nursery, lambda: holder.context)
    client = client_ctx(mat)
    assert holder.maybe_reload() is False  # nothing changed yet
    old_serial = leaf_serial(mat.server_leaf)
    assert (await exchange(server.port, client)).server_serial == old_serial

    long_lived = await open_client(server.port, client)
    try:
        await echo_once(long_lived)
        new_leaf = mat.ca.issue_cert("localhost", "127.0.0.1")
        mat.install_server_cert(new_leaf)
        with caplog.at_level(logging.INFO, logger="mcrouter_trio.tls"):
            assert holder.maybe_reload() is True
        assert holder.generation == 1
        assert "reloaded" in caplog.text
        assert (await exchange(server.port, client)).server_serial == leaf_serial(new_leaf)
        # The connection opened before the rotation keeps working with its old certificate.
        await echo_once(long_lived)
        assert serial_of(long_lived) == old_serial
    finally:
        await long_lived.aclose()
    assert server.errors == []


@pytest.mark.parametrize("damage", ["mismatched key", "half-written cert", "missing key"])
async def test_broken_replacement_keeps_old_context(
    nursery: trio.Nursery, mat: Pki, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    holder = ReloadingContext(server_settings(mat), build_server_context)
    server = await start_server(nursery, lambda: holder.context)
    before = holder.context
    good_cert = mat.server_cert.read_bytes()
    if damage == "mismatched key":
        replace_file(mat.server_key, mat.ca.issue_cert("x.example").private_key_pem.bytes())
    elif damage == "half-written cert":
        mat.server_cert.write_bytes(good_cert[: len(good_cert) // 2])  # in place: size differs
    else:
        mat.server_key.unlink()

    with caplog.at_level(logging.ERROR, logger="mcrouter_trio.tls"):
        assert holder.maybe_reload() is False
    assert holder.context is before
    assert "Error" in (holder.last_error or "")  # "SSLError: ...", "FileNotFoundError: ..."
    assert [r.name for r in caplog.records] == ["mcrouter_trio.tls"]
    assert (await exchange(server.port, client_ctx(mat))).server_serial == leaf_serial(
        mat.server_leaf
    )

    # The same broken files are not retried (no log spam from a periodic caller)...
    caplog.clear()
    assert holder.maybe_reload() is False
    assert caplog.records == []
    # ...but a repaired set is picked up.
    new_leaf = mat.ca.issue_cert("localhost", "127.0.0.1")
    mat.install_server_cert(new_leaf)
    assert holder.maybe_reload() is True
    assert holder.last_error is None
    assert (await exchange(server.port, client_ctx(mat))).server_serial == leaf_serial(new_leaf)


def test_initial_build_errors_propagate(mat: Pki) -> None:
    mat.server_key.unlink()
    with pytest.raises(FileNotFoundError):
        ReloadingContext(server_settings(mat), build_server_context)


async def test_client_context_reload(mat: Pki) -> None:
    holder = ReloadingContext(
        ClientTLSSettings(
            cert_path=mat.client_cert,
            key_path=mat.client_key,
            ca_path=mat.ca_file,
            verify_peers=True,
        ),
        build_client_context,
    )
    before = holder.context
    mat.install_client_cert(mat.ca.issue_cert("client.example"))
    assert holder.maybe_reload() is True
    assert holder.context is not before


# --- session resumption --------------------------------------------------------------------


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
async def test_session_resumption(nursery: trio.Nursery, mat: Pki, tls12: bool) -> None:
    ctx = build_server_context(server_settings(mat, require_peer_certs=True))
    server = await start_server(nursery, lambda: ctx)
    client = client_ctx(mat)
    if tls12:
        tls12_only(client)
    cache = SessionCache()
    assert cache.get(HOST, server.port, client) is None

    first = await exchange(server.port, client)
    assert first.session_reused is False
    cache.put(HOST, server.port, client, first.session)
    second = await exchange(server.port, client, session=cache.get(HOST, server.port, client))
    assert second.session_reused is True
    assert server.errors == []


async def test_session_cache_bookkeeping(nursery: trio.Nursery, mat: Pki) -> None:
    ctx = build_server_context(server_settings(mat))
    server = await start_server(nursery, lambda: ctx)
    client = client_ctx(mat)
    session = (await exchange(server.port, client)).session
    assert session is not None
    cache = SessionCache()
    cache.put(HOST, 1, client, None)  # no session yet: ignored
    assert len(cache) == 0

    cache.put(HOST, 1, client, session)
    assert cache.get(HOST, 1, client) is session
    assert cache.get(HOST, 2, client) is None
    # After a reload the context differs, and ssl would reject the old session.
    reloaded = client_ctx(mat)
    assert cache.get(HOST, 1, reloaded) is None
    with pytest.raises(ValueError, match="different SSLContext"):
        await exchange(server.port, reloaded, session=session)

    cache.discard(HOST, 1)
    assert cache.get(HOST, 1, client) is None
    cache.put(HOST, 1, client, session)
    cache.disable(HOST, 1)
    cache.put(HOST, 1, client, session)
    assert cache.get(HOST, 1, client) is None
    assert len(cache) == 0
