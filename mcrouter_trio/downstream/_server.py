"""Listeners, connection limits and the serving nursery tree.

Each accepted connection, plain or TLS, gets a session task (see session.py).

A connection the proxy closes (after `quit`, at shutdown) is closed gracefully:
FIN after the last reply, then the client's input is read and dropped until the
replies are delivered. Closing a socket with unread input makes the kernel send
RST, and RST discards whatever of our replies it has not yet delivered.

Ownership (the nursery tree in `serve`):
    serve
    ├── destination nursery: one task per backend server (see destination.py),
    │                        and the client reactor (see reactor.py)
    └── connection nursery (graceful deadline on shutdown)
        ├── accept loops, one per listener (cancelled first on shutdown)
        └── one session task per accepted connection
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import ssl
import struct
import termios
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from mcrouter_trio.config import ProxyConfig
from mcrouter_trio.downstream._accept import AcceptShortage, serve_listener
from mcrouter_trio.downstream._admin import AdminCommands
from mcrouter_trio.downstream._reactor import ClientReactor
from mcrouter_trio.downstream._router import Router, RouterSettings
from mcrouter_trio.downstream._session import ClientSession
from mcrouter_trio.ops._delete_stream import DeleteStreamSettings, start_delete_stream
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.transport._tls import TLSSocket
from mcrouter_trio.upstream._context import ProxyContext
from mcrouter_trio.upstream._health import HealthSettings

log = logging.getLogger("mcrouter_trio.downstream")

_TOO_MANY_CONNECTIONS: Final = b"ERROR Too many open connections\r\n"
#: The longest a closed connection waits for its replies to be delivered.
LINGER_SECONDS: Final = 2.0
_LINGER_POLL_SECONDS: Final = 0.01


@attrs.frozen
class ServerSettings:
    ports: tuple[int, ...] = (5000,)
    listen_addresses: tuple[str, ...] = ()
    max_value_size: int = 1024 * 1024
    max_line_length: int = 1024 * 1024
    max_outstanding: int = 34133
    #: Bytes of unwritten output and buffered input one client may hold (0: no limit),
    #: and how long it may stay at that limit before it is disconnected.
    max_client_buffer: int = 64 * 1024 * 1024
    client_timeout: float = 1.0
    #: Client connections served at once; 0: no cap (the command line derives one).
    max_conns: int = 0
    max_pending_per_server: int = 100_000
    #: Send a pass's single-key gets to a server as one multi-key get: True, False,
    #: or None for TLS servers only (`--batch-gets`).
    batch_gets: bool | None = None
    grace_period: float = 5.0
    #: TLS for clients on `ssl_ports` (a callable so certificate rotation is picked up).
    ssl_ports: tuple[int, ...] = ()
    server_ssl_context: Callable[[], ssl.SSLContext] | None = None
    handshake_timeout: float = 5.0
    #: Bind with SO_REUSEPORT, so that several worker processes share the ports.
    reuse_port: bool = False
    #: TKO tracking and probes (`--timeouts-until-tko`, `-r`, ...).
    health: HealthSettings = attrs.field(factory=HealthSettings)
    #: The reliable delete stream (`-a/--async-dir`); None: failed deletes get their error.
    asynclog: DeleteStreamSettings | None = None


class Proxy:
    """Shared state of one serving process: the router, stats and live sessions."""

    def __init__(self, router: Router, settings: ServerSettings, stats: ProxyStats) -> None:
        self.router = router
        self.settings = settings
        self.stats = stats
        #: Shutdown has begun: a connection accepted from now on is closed unread.
        self.terminating = False
        self.listeners: list[trio.SocketListener] = []
        self._sessions: set[ClientSession] = set()
        #: Does the I/O of every client session; its task runs in `serve`.
        self.reactor = ClientReactor(router.ctx.backend_writes)
        self.accept_shortage = AcceptShortage()

    async def handle(self, stream: trio.SocketStream | TLSSocket) -> None:
        """Serve one accepted connection; never lets an exception reach the listener."""
        stats = self.stats
        if self.terminating:
            # Accepted (a TLS handshake, say) as shutdown began: nothing was read.
            await trio.aclose_forcefully(stream)
            return
        if self.settings.max_conns and stats.curr_connections >= self.settings.max_conns:
            stats.rejected_connections += 1
            await _reject(stream)
            return
        stats.curr_connections += 1
        stats.total_connections += 1
        session = ClientSession(self, stream, self.reactor, self.router.ctx.client_writes)
        self._sessions.add(session)
        try:
            await session.run()
            if not session.abandoned:
                await close_gracefully(stream.socket)
        except Exception:
            log.exception("client session failed")
        finally:
            self._sessions.discard(session)
            stats.curr_connections -= 1
            await trio.aclose_forcefully(stream)

    def drain_sessions(self) -> None:
        """Shutdown: read no more; answer the requests already read, then close."""
        self.terminating = True
        for session in list(self._sessions):
            session.drain()


async def close_gracefully(sock: trio.socket.SocketType) -> None:
    """Send FIN after the replies; read and drop input until they are delivered.

    Returns when the client has closed too, or has acknowledged every byte sent
    and sent nothing more, or after `LINGER_SECONDS`. Does nothing on a socket
    that is already broken.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        with trio.move_on_after(LINGER_SECONDS):
            while _unread(sock) or _undelivered(sock):
                with trio.move_on_after(_LINGER_POLL_SECONDS):
                    if not await sock.recv(65536):
                        return  # the client closed: nothing can be reset any more
    except OSError:
        return


def _unread(sock: trio.socket.SocketType) -> int:
    return _queue_size(sock, termios.FIONREAD)


def _undelivered(sock: trio.socket.SocketType) -> int:
    """Bytes sent (our FIN included) that the client has not acknowledged."""
    return _queue_size(sock, termios.TIOCOUTQ)


def _queue_size(sock: trio.socket.SocketType, request: int) -> int:
    size: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    return size


async def _reject(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_TOO_MANY_CONNECTIONS)
    await trio.aclose_forcefully(stream)


async def open_listeners(
    ports: Sequence[int], addresses: Sequence[str], *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    for port in ports:
        hosts: Sequence[str | None] = addresses or [None]  # None: every interface
        for address in hosts:
            if reuse_port:
                listeners += await _reuse_port_listeners(port, address)
            else:
                listeners += await trio.open_tcp_listeners(port, host=address)
    return listeners


async def _reuse_port_listeners(port: int, host: str | None) -> list[trio.SocketListener]:
    """Like `trio.open_tcp_listeners`, with SO_REUSEPORT: every worker binds the port."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners = []
    for family, kind, proto, _name, sockaddr in addresses:
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(sockaddr)
            sock.listen(socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


async def serve(
    config: ProxyConfig,
    settings: ServerSettings,
    router_settings: RouterSettings | None = None,
    *,
    stats: ProxyStats | None = None,
    shutdown: trio.Event | None = None,
    client_ssl_context_for: Callable[[ServerSpec], Callable[[], ssl.SSLContext] | None]
    | None = None,
    host_id: int = 0,
    worker_index: int = 0,
    admin: AdminCommands | None = None,
    task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy until `shutdown` is set (then drain gracefully) or cancelled.

    `host_id` is the one `config` was loaded with, and `worker_index` this
    process's index among the `--num-proxies` workers, for the routes' context.
    """
    stats = stats or ProxyStats()
    shutdown = shutdown if shutdown is not None else trio.Event()
    async with trio.open_nursery() as destination_nursery:
        ctx = ProxyContext(
            destination_nursery,
            ssl_context_for=client_ssl_context_for,
            max_pending=settings.max_pending_per_server,
            batch_gets=settings.batch_gets,
            host_id=host_id,
            worker_index=worker_index,
            health=settings.health,
        )
        router_settings = router_settings or RouterSettings()
        tree = config.tree(router_settings.default_route)
        router = Router(tree, ctx, stats, router_settings, admin)
        stats.background = ctx.background
        stats.ejections = ctx.ejections
        if settings.asynclog is not None:
            start_delete_stream(
                settings.asynclog, ctx, destination_nursery, stats, lambda: router.tree.servers
            )
        destination_nursery.start_soon(ctx.run_timers, name="route timers")
        proxy = Proxy(router, settings, stats)
        destination_nursery.start_soon(proxy.reactor.run, name="client reactor")
        reuse = settings.reuse_port
        plain = await open_listeners(settings.ports, settings.listen_addresses, reuse_port=reuse)
        secure = await open_listeners(
            settings.ssl_ports, settings.listen_addresses, reuse_port=reuse
        )
        proxy.listeners = [*plain, *secure]
        async with trio.open_nursery() as connection_nursery:
            async with trio.open_nursery() as accept_nursery:
                for listener in plain:
                    accept_nursery.start_soon(
                        serve_listener,
                        listener,
                        proxy.handle,
                        connection_nursery,
                        proxy.accept_shortage,
                    )
                if secure:
                    from mcrouter_trio.downstream._tls_listener import serve_tls_listener

                    for listener in secure:
                        accept_nursery.start_soon(
                            serve_tls_listener, proxy, listener, connection_nursery
                        )
                task_status.started(proxy)
                await shutdown.wait()
                accept_nursery.cancel_scope.cancel()
            log.info("shutting down: answering the requests already read, then closing")
            proxy.drain_sessions()
            connection_nursery.cancel_scope.deadline = trio.current_time() + settings.grace_period
        destination_nursery.cancel_scope.cancel()
