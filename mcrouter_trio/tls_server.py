"""TLS listeners: accept, handshake under a deadline, then serve like a plain client.

The handshake runs in the connection's own task with a timeout, so a silent or
slow client cannot hold anything but its own task; every refused handshake is
logged with its reason (no certificate, unknown CA, plaintext on a TLS port).
"""

from __future__ import annotations

import logging
import ssl
from functools import partial

import trio

from mcrouter_trio.server import Proxy

log = logging.getLogger("mcrouter_trio.tls")


async def serve_tls_listener(proxy: Proxy, listener: trio.SocketListener) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(partial(_handshake_then_serve, proxy, stream))


async def _handshake_then_serve(proxy: Proxy, stream: trio.SocketStream) -> None:
    context_source = proxy.settings.server_ssl_context
    assert context_source is not None
    peer = _peer(stream)
    tls = trio.SSLStream(stream, context_source(), server_side=True, https_compatible=True)
    try:
        with trio.fail_after(proxy.settings.handshake_timeout):
            await tls.do_handshake()
    except trio.TooSlowError:
        log.warning("TLS handshake from %s refused: timed out", peer)
        await trio.aclose_forcefully(stream)
        return
    except trio.BrokenResourceError as exc:
        reason = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
        log.warning("TLS handshake from %s refused: %s", peer, reason)
        await trio.aclose_forcefully(stream)
        return
    await proxy.handle(tls)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown peer"
    return f"{host}:{port}"
