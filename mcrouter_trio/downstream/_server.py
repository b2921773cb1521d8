"""Listeners, connection limits and the serving nursery tree.

Each accepted connection, plain or TLS, becomes a `ClientSession` (see _session.py)
with no task of its own: the client reactor does its I/O and the session keeper
(see _keeper.py) owns its lifetime and closes its connection gracefully.

Ownership (the nursery tree in `serve`):
    serve
    ├── destination nursery: one task per backend server (see destination.py),
    │                        and the client reactor (see _reactor.py)
    └── connection nursery (graceful deadline on shutdown)
        ├── accept loops, one per listener (cancelled first on shutdown)
        ├── TLS handshakes, one task each until the connection is a session
        └── the session keeper: every session; returns at shutdown once all are closed
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from mcrouter_trio.config import ProxyConfig
from mcrouter_trio.downstream._accept import AcceptShortage, serve_listener
from mcrouter_trio.downstream._admin import AdminCommands
from mcrouter_trio.downstream._keeper import SessionKeeper
from mcrouter_trio.downstream._reactor import ClientReactor
from mcrouter_trio.downstream._router import GetsOnlyRouter, Router, RouterSettings
from mcrouter_trio.downstream._session import ClientSession
from mcrouter_trio.ops._delete_stream import DeleteStreamSettings, start_delete_stream
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing.handles.shadow import DEFAULT_MAX_SHADOW_REQUESTS
from mcrouter_trio.transport._tls import TLSSocket
from mcrouter_trio.upstream._context import ProxyContext
from mcrouter_trio.upstream._health import HealthSettings

log = logging.getLogger("mcrouter_trio.downstream")

_TOO_MANY_CONNECTIONS: Final = b"ERROR Too many open connections\r\n"


@attrs.frozen
class ServerSettings:
    ports: tuple[int, ...] = (5000,)
    listen_addresses: tuple[str, ...] = ()
    #: Inherited listening sockets for plain-text clients (mcrouter's --listen-sock-fd).
    listen_fds: tuple[int, ...] = ()
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
    #: Shadow copies in flight before more are dropped (0: no limit of their own).
    max_shadow_requests: int = DEFAULT_MAX_SHADOW_REQUESTS
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
    """Shared state of one serving process: the router, stats, reactor and keeper."""

    def __init__(self, router: Router, settings: ServerSettings, stats: ProxyStats) -> None:
        self.router = router
        self.settings = settings
        self.stats = stats
        #: Shutdown has begun: a connection accepted from now on is closed unread.
        self.terminating = False
        self.listeners: list[trio.SocketListener] = []
        #: Does the I/O of every client session; its task runs in `serve`.
        self.reactor = ClientReactor(router.ctx.backend_writes)
        #: Owns every client session's lifetime; its task runs in `serve`.
        self.keeper = SessionKeeper(self.reactor, stats)
        self.accept_shortage = AcceptShortage()

    def unanswered(self) -> int:
        """Requests the clients sent that have no reply yet (`proxy_request_num_outstanding`)."""
        return sum(client.unanswered for client in self.reactor.clients.values())

    def handle(self, stream: trio.SocketStream | TLSSocket) -> None:
        """Serve one accepted connection; never lets an exception reach the listener."""
        try:
            self._handle(stream)
        except Exception:
            log.exception("client session failed to start")
            stream.socket.close()

    def _handle(self, stream: trio.SocketStream | TLSSocket) -> None:
        stats = self.stats
        if self.terminating:
            # Accepted (a TLS handshake, say) as shutdown began: nothing was read.
            stream.socket.close()
            return
        if self.settings.max_conns and stats.curr_connections >= self.settings.max_conns:
            stats.rejected_connections += 1
            _reject(stream)
            return
        # A plain session keeps the bare descriptor: a socket object and Trio's
        # wrappers around it would cost every idle connection a few hundred bytes.
        if isinstance(stream, TLSSocket):
            connection: int | TLSSocket = stream
        else:
            connection = stream.socket.detach()
        try:
            session = ClientSession(self, connection, self.reactor, self.router.ctx.client_writes)
        except Exception:
            if not isinstance(connection, TLSSocket):
                os.close(connection)
            raise
        self.keeper.open(session)

    def drain_sessions(self) -> None:
        """Shutdown: read no more; answer the requests already read, then close."""
        self.terminating = True
        self.keeper.drain()


def _reject(stream: trio.SocketStream | TLSSocket) -> None:
    """Answer memcached's error line (it fits any socket buffer) and close at once.

    No lingering: the connection is over the cap, its descriptor is wanted back.
    """
    try:
        if isinstance(stream, TLSSocket):
            stream.encrypt(_TOO_MANY_CONNECTIONS)
            stream.write_some()
        else:
            os.write(stream.socket.fileno(), _TOO_MANY_CONNECTIONS)
    except (OSError, ssl.SSLError):
        pass
    stream.socket.close()


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


def inherited_port(fd: int) -> int:
    """The TCP port of the socket `fd` (OSError if it is no TCP socket)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise OSError(f"socket family {sock.family.name}, type {sock.type.name}")
        port: int = sock.getsockname()[1]
        return port


def inherited_listener(fd: int) -> trio.SocketListener:
    """A listener on the inherited socket `fd` (listen() again: harmless if it was)."""
    sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
    sock.listen(socket.SOMAXCONN)
    return trio.SocketListener(sock)


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
            max_shadow_requests=settings.max_shadow_requests,
            counters=stats,
        )
        router_settings = router_settings or RouterSettings()
        tree = config.tree(router_settings.default_route)
        router_class = GetsOnlyRouter if router_settings.allow_only_gets else Router
        router = router_class(tree, ctx, stats, router_settings, admin)
        stats.background = ctx.background
        stats.ejections = ctx.ejections
        if settings.asynclog is not None:
            start_delete_stream(
                settings.asynclog, ctx, destination_nursery, stats, lambda: router.tree.servers
            )
        destination_nursery.start_soon(ctx.run_timers, name="route timers")
        proxy = Proxy(router, settings, stats)
        stats.unanswered = proxy.unanswered
        destination_nursery.start_soon(proxy.reactor.run, name="client reactor")
        destination_nursery.start_soon(stats.keep_window, ctx.destinations, name="stats window")
        reuse = settings.reuse_port
        plain = await open_listeners(settings.ports, settings.listen_addresses, reuse_port=reuse)
        plain += [inherited_listener(fd) for fd in settings.listen_fds]
        secure = await open_listeners(
            settings.ssl_ports, settings.listen_addresses, reuse_port=reuse
        )
        proxy.listeners = [*plain, *secure]
        async with trio.open_nursery() as connection_nursery:
            async with trio.open_nursery() as accept_nursery:
                connection_nursery.start_soon(proxy.keeper.run, name="client sessions")
                for listener in plain:
                    accept_nursery.start_soon(
                        serve_listener, listener, proxy.handle, proxy.accept_shortage
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
