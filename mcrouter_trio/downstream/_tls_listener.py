"""TLS listeners: accept, handshake under a deadline, then serve like a plain client.

The handshake runs in a task of its own (in the proxy's connection nursery) with a
timeout, so a silent or slow client cannot hold anything but that task; every
refused handshake is logged with its reason (no certificate, unknown CA, plaintext
on a TLS port). Once the handshake is done the task hands the connection to the
proxy as a session, like a plain one, and ends: a shutdown stops accepting first
and lets TLS clients finish their batch too.
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

import trio

from mcrouter_trio.downstream._accept import serve_listener
from mcrouter_trio.downstream._server import Proxy
from mcrouter_trio.tls._contexts import describe_ssl_error
from mcrouter_trio.transport._tls import TLSSocket

log = logging.getLogger("mcrouter_trio.tls")

# OpenSSL's reasons for bytes that are not a TLS record at all.
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL"}
)


async def serve_tls_listener(
    proxy: Proxy, listener: trio.SocketListener, handler_nursery: trio.Nursery
) -> None:
    def start_handshake(stream: trio.SocketStream) -> None:
        handler_nursery.start_soon(_handshake_then_serve, proxy, stream)

    await serve_listener(listener, start_handshake, proxy.accept_shortage)


async def _handshake_then_serve(proxy: Proxy, stream: trio.SocketStream) -> None:
    context_source = proxy.settings.server_ssl_context
    assert context_source is not None
    peer = _peer(stream)
    timeout = proxy.settings.handshake_timeout
    try:
        tls = TLSSocket(stream, context_source(), server_side=True)
        with trio.fail_after(timeout):
            await tls.do_handshake()
    except trio.TooSlowError:
        proxy.stats.ssl_handshakes_refused += 1
        log.warning("TLS handshake from %s refused: not completed within %g s", peer, timeout)
        stream.socket.close()
        return
    except (ssl.SSLError, OSError) as exc:
        proxy.stats.ssl_handshakes_refused += 1
        log.warning("TLS handshake from %s refused: %s", peer, refusal_reason(exc))
        stream.socket.close()
        return
    except BaseException:
        stream.socket.close()  # cancelled: shutdown's grace period is over
        raise
    proxy.stats.ssl_handshakes += 1
    if tls.session_reused:
        proxy.stats.ssl_handshakes_resumed += 1
    proxy.handle(tls)


def refusal_reason(cause: BaseException | None) -> str:
    """Why a client's handshake failed, in words an operator can act on."""
    if cause is None or isinstance(cause, ssl.SSLEOFError | ConnectionError):
        return "the client closed the connection during the handshake"
    text = describe_ssl_error(cause)
    reason = getattr(cause, "reason", None)
    if reason in _NOT_TLS:
        return f"not a TLS client (plaintext on a TLS port?): {text}"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return f"{text} (--ssl-require-peer-certs)"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {text}"
    return text


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown peer"
    return f"{host}:{port}"
