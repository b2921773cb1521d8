"""Listeners and client sessions: the I/O around the pure parser and the router.

A client session is one Trio task. It reads whatever the client sent, parses every
complete request in the buffer, routes them all (routing is synchronous; replies
arrive through `Pending`s), then writes the replies in request order, sending
each run of ready replies with one `send_all`. Requests pipelined by one client
are therefore routed concurrently and answered in order, with no task or channel
per request.

The session stops reading while it waits for a batch's replies, which bounds
what one client can have outstanding (as memcached does, a client must read its
replies). `max_outstanding` caps a batch for clients that pipeline a lot.

Ownership (the nursery tree in `serve`):
    serve
    ├── destination nursery: one task per backend server (see destination.py)
    └── connection nursery (graceful deadline on shutdown)
        ├── accept loops, one per listener (cancelled first on shutdown)
        └── one ClientSession task per accepted connection
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

import attrs
import trio

from mcrouter_trio._fastio import FastSocketIO, wait_for
from mcrouter_trio.config import ProxyConfig
from mcrouter_trio.config._specs import ServerSpec
from mcrouter_trio.messages import META, Op, Pending, Reply, Request, Result
from mcrouter_trio.protocol import (
    NEED_DATA,
    CloseConnection,
    ImmediateReply,
    RequestParser,
    TooLargeSet,
)
from mcrouter_trio.router import ProxyContext, Router, RouterSettings, host_id_for
from mcrouter_trio.stats import ProxyStats

log = logging.getLogger("mcrouter_trio.server")

RECEIVE_SIZE: Final = 65536
_TOO_MANY_CONNECTIONS: Final = b"ERROR Too many open connections\r\n"


@attrs.frozen
class ServerSettings:
    ports: tuple[int, ...] = (5000,)
    listen_addresses: tuple[str, ...] = ()
    max_value_size: int = 1024 * 1024
    max_line_length: int = 1024 * 1024
    max_outstanding: int = 34133
    max_conns: int = 0
    max_pending_per_server: int = 100_000
    grace_period: float = 5.0
    #: TLS for clients on `ssl_ports` (a callable so certificate rotation is picked up).
    ssl_ports: tuple[int, ...] = ()
    server_ssl_context: Callable[[], ssl.SSLContext] | None = None
    handshake_timeout: float = 5.0


class Proxy:
    """Shared state of one serving process: the router, stats and live sessions."""

    def __init__(self, router: Router, settings: ServerSettings, stats: ProxyStats) -> None:
        self.router = router
        self.settings = settings
        self.stats = stats
        self.terminating = False
        self.listeners: list[trio.SocketListener] = []
        self._sessions: set[ClientSession] = set()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection; never lets an exception reach the listener."""
        stats = self.stats
        if self.settings.max_conns and stats.curr_connections >= self.settings.max_conns:
            stats.rejected_connections += 1
            await _reject(stream)
            return
        stats.curr_connections += 1
        stats.total_connections += 1
        session = ClientSession(self, stream)
        self._sessions.add(session)
        try:
            await session.run()
        except Exception:
            log.exception("client session failed")
        finally:
            self._sessions.discard(session)
            stats.curr_connections -= 1
            await trio.aclose_forcefully(stream)

    def stop_idle_sessions(self) -> None:
        """Shutdown: close sessions waiting for input; busy ones finish their batch."""
        self.terminating = True
        for session in list(self._sessions):
            if not session.busy:
                session.scope.cancel()


async def _reject(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_TOO_MANY_CONNECTIONS)
    await trio.aclose_forcefully(stream)


class ClientSession:
    def __init__(self, proxy: Proxy, stream: trio.abc.Stream) -> None:
        self.proxy = proxy
        self.stream = stream
        self.io: FastSocketIO | trio.abc.Stream = (
            FastSocketIO(stream) if type(stream) is trio.SocketStream else stream
        )
        self.busy = False
        self.scope = trio.CancelScope()
        settings = proxy.settings
        self.parser = RequestParser(
            max_value_size=settings.max_value_size, max_line_length=settings.max_line_length
        )

    async def run(self) -> None:
        # A client that goes away mid-request has nothing left to be answered.
        with self.scope, contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._serve()

    async def _serve(self) -> None:
        io = self.io
        fast = io if isinstance(io, FastSocketIO) else None
        parser = self.parser
        while not self.proxy.terminating:
            data = await io.receive_some(RECEIVE_SIZE)
            if not data:
                return
            self.busy = True
            parser.feed(data)
            if not await self._process():
                return
            self.busy = False
            if fast is not None:
                if not fast.parked:
                    # Nothing blocked this round: let other tasks run.
                    await trio.lowlevel.checkpoint()
                fast.parked = False

    async def _process(self) -> bool:
        """Route and answer everything buffered; False when the connection must close."""
        parser = self.parser
        route = self.proxy.router.route
        limit = self.proxy.settings.max_outstanding
        while True:
            batch: list[tuple[Request | None, Pending]] = []
            keep_open = True
            while len(batch) < limit:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is Request:
                    if event.op is Op.QUIT:
                        keep_open = False
                        break
                    batch.append((event, route(event)))
                elif type(event) is ImmediateReply:
                    if event.raw:
                        batch.append((None, Pending(Reply(Result.OK, event.raw))))
                elif type(event) is TooLargeSet:
                    route(Request(Op.DELETE, event.key))  # invalidate, as memcached does
                    if event.raw:
                        batch.append((None, Pending(Reply(Result.OK, event.raw))))
                elif type(event) is CloseConnection:
                    log.info("closing client connection: %s", event.reason)
                    if event.raw:
                        batch.append((None, Pending(Reply(Result.OK, event.raw))))
                    keep_open = False
                    break
            else:
                await self._answer(batch)
                continue  # the batch limit was hit: more may be buffered
            await self._answer(batch)
            return keep_open

    async def _answer(self, batch: list[tuple[Request | None, Pending]]) -> None:
        out: list[bytes] = []
        send_all = self.io.send_all
        for request, pending in batch:
            reply = pending.reply
            if reply is None:
                if out:
                    await send_all(b"".join(out))
                    out.clear()
                if isinstance(self.io, FastSocketIO):
                    self.io.parked = True
                reply = await wait_for(pending)
            if (
                request is None
                or not request.noreply
                or (request.op in META and not _quiet_hides(request.op, reply.raw))
            ):
                out.append(reply.raw)
        if out:
            await send_all(b"".join(out))


def _quiet_hides(op: Op, raw: bytes) -> bool:
    """Meta `q` hides only the boring outcome: EN for mg, HD for the others.

    memcached 1.6.18 treats every successful `ma` as boring, its value (VA) too.
    """
    code = raw[:2]
    if op is Op.MA and code == b"VA":
        return True
    return code == (b"EN" if op is Op.MG else b"HD") and raw[2:3] in (b"\r", b" ")


async def open_listeners(
    ports: Sequence[int], addresses: Sequence[str]
) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    for port in ports:
        if addresses:
            for address in addresses:
                listeners += await trio.open_tcp_listeners(port, host=address)
        else:
            listeners += await trio.open_tcp_listeners(port)
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
    host_id: int | None = None,
    task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy until `shutdown` is set (then drain gracefully) or cancelled."""
    stats = stats or ProxyStats()
    shutdown = shutdown if shutdown is not None else trio.Event()
    async with trio.open_nursery() as destination_nursery:
        ctx = ProxyContext(
            destination_nursery,
            ssl_context_for=client_ssl_context_for,
            max_pending=settings.max_pending_per_server,
            host_id=host_id if host_id is not None else host_id_for(socket.gethostname()),
        )
        router = Router(config, ctx, stats, router_settings or RouterSettings())
        proxy = Proxy(router, settings, stats)
        plain = await open_listeners(settings.ports, settings.listen_addresses)
        secure = await open_listeners(settings.ssl_ports, settings.listen_addresses)
        proxy.listeners = [*plain, *secure]
        async with trio.open_nursery() as connection_nursery:
            async with trio.open_nursery() as accept_nursery:
                for listener in plain:
                    accept_nursery.start_soon(
                        partial(
                            trio.serve_listeners,
                            proxy.handle,
                            [listener],
                            handler_nursery=connection_nursery,
                        )
                    )
                if secure:
                    from mcrouter_trio.tls_server import serve_tls_listener

                    for listener in secure:
                        accept_nursery.start_soon(
                            serve_tls_listener, proxy, listener, connection_nursery
                        )
                task_status.started(proxy)
                await shutdown.wait()
                accept_nursery.cancel_scope.cancel()
            log.info("shutting down: draining client connections")
            proxy.stop_idle_sessions()
            connection_nursery.cancel_scope.deadline = trio.current_time() + settings.grace_period
        destination_nursery.cancel_scope.cancel()
