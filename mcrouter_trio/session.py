"""Client sessions: the I/O around the pure parser and the router.

Both kinds of session parse everything a read delivered, route all of it at once
(routing is synchronous; replies arrive through `Pending`s) and answer in request
order, so requests pipelined by one client are routed concurrently with no task
or channel per request.

- `PlainSession` (plain TCP, the hot path) never waits for a reply. Whichever
  task resolves the reply at the head of the session's queue appends the ready
  replies to the session's output, and the `ReplyFlusher` writes every touched
  session once per batch of backend replies. The session task itself only wakes
  when its client sends something: one Trio wake-up per client request.
- `StreamSession` (TLS and any other `trio.abc.Stream`) parks on the head reply
  and writes each run of ready replies with one `send_all`; a TLS stream cannot be
  written from another task synchronously.

Both stop reading while `max_outstanding` requests are unanswered (and the plain
session while its client does not read its replies), which bounds what one client
can have in flight, as memcached does.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from mcrouter_trio._fastio import Parker, ReplyFlusher, wait_for
from mcrouter_trio.messages import META, Op, Pending, Reply, Request, Result
from mcrouter_trio.protocol import (
    NEED_DATA,
    CloseConnection,
    ImmediateReply,
    RequestParser,
    TooLargeSet,
)

if TYPE_CHECKING:
    from mcrouter_trio.server import Proxy

log = logging.getLogger("mcrouter_trio.server")

RECEIVE_SIZE: Final = 65536

Entry = tuple[Request | None, Pending]


class Status(enum.Enum):
    NEED_DATA = enum.auto()
    #: `max_outstanding` requests are unanswered: answer some before parsing on.
    FULL = enum.auto()
    #: `quit`, or input after which memcached closes the connection.
    CLOSE = enum.auto()


def route_buffered(
    parser: RequestParser,
    route: Callable[[Request], Pending],
    entries: deque[Entry] | list[Entry],
    limit: int,
) -> Status:
    """Route every complete request in `parser`, appending (request, reply) entries.

    Replies the parser made itself (errors, `mn`) become entries with no request.
    """
    while len(entries) < limit:
        event = parser.next_event()
        if event is NEED_DATA:
            return Status.NEED_DATA
        if type(event) is Request:
            if event.op is Op.QUIT:
                return Status.CLOSE
            entries.append((event, route(event)))
        elif type(event) is ImmediateReply:
            if event.raw:
                entries.append((None, Pending(Reply(Result.OK, event.raw))))
        elif type(event) is TooLargeSet:
            route(Request(Op.DELETE, event.key))  # invalidate, as memcached does
            if event.raw:
                entries.append((None, Pending(Reply(Result.OK, event.raw))))
        elif type(event) is CloseConnection:
            log.info("closing client connection: %s", event.reason)
            if event.raw:
                entries.append((None, Pending(Reply(Result.OK, event.raw))))
            return Status.CLOSE
    return Status.FULL


def shown(request: Request | None, reply: Reply) -> bool:
    """Whether the client sees `reply`: not for `noreply`, and meta `q` hides success."""
    if request is None or not request.noreply:
        return True
    return request.op in META and not _quiet_hides(request.op, reply.raw)


def _quiet_hides(op: Op, raw: bytes) -> bool:
    """Meta `q` hides only the boring outcome: EN for mg, HD for the others.

    memcached 1.6.18 treats every successful `ma` as boring, its value (VA) too.
    """
    code = raw[:2]
    if op is Op.MA and code == b"VA":
        return True
    return code == (b"EN" if op is Op.MG else b"HD") and raw[2:3] in (b"\r", b" ")


def _parser_for(proxy: Proxy) -> RequestParser:
    settings = proxy.settings
    return RequestParser(
        max_value_size=settings.max_value_size, max_line_length=settings.max_line_length
    )


class PlainSession:
    """A plain-TCP client: non-blocking syscalls, replies written by their resolver."""

    def __init__(self, proxy: Proxy, stream: trio.SocketStream, flusher: ReplyFlusher) -> None:
        self.proxy = proxy
        self.scope = trio.CancelScope()
        self.parser = _parser_for(proxy)
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self._flusher = flusher
        self._limit = proxy.settings.max_outstanding
        self._waiting: deque[Entry] = deque()
        #: The head reply `_on_reply` is registered on (at most one registration).
        self._watched: Pending | None = None
        self._out = bytearray()
        self._flush_requested = False
        self._write_blocked = False
        self._parker = Parker()
        self._closed = False
        self._nursery: trio.Nursery | None = None

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._out)

    async def run(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._serve()
                    nursery.cancel_scope.cancel()
        finally:
            # Replies resolved from now on must not be written: the descriptor is
            # about to close and its number may be reused by another client.
            self._closed = True

    async def _serve(self) -> None:
        parser = self.parser
        proxy = self.proxy
        route = proxy.router.route
        waiting = self._waiting
        fd = self._fd
        sock = self._socket
        read_first = True
        status = Status.NEED_DATA
        while not proxy.terminating:
            if status is Status.FULL or self._write_blocked:
                await self._parker.park()
                if len(waiting) < self._limit and not self._write_blocked:
                    status = route_buffered(parser, route, waiting, self._limit)
                    self._answer_ready()
                continue
            if not read_first:
                await trio.lowlevel.wait_readable(sock)
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                read_first = False
                continue
            except OSError:
                return  # reset by the client: nobody is left to answer
            if not data:
                return
            # A short read means the client is waiting for us: wait for readiness
            # next time rather than paying for a read that would block.
            read_first = len(data) == RECEIVE_SIZE
            parser.feed(data)
            status = route_buffered(parser, route, waiting, self._limit)
            self._answer_ready()
            if status is Status.CLOSE:
                while self._waiting or self._write_blocked:
                    await self._parker.park()
                return
            if read_first:
                await trio.lowlevel.checkpoint()  # nothing blocked: let others run

    def _answer_ready(self) -> None:
        self._advance()
        if self._out:
            self.flush()

    def _advance(self) -> None:
        """Move the replies ready at the head of the queue to the output, in order."""
        waiting = self._waiting
        out = self._out
        while waiting:
            request, pending = waiting[0]
            reply = pending.reply
            if reply is None:
                if self._watched is not pending:
                    self._watched = pending
                    pending.then(self._on_reply)
                return
            waiting.popleft()
            if (
                request is None
                or not request.noreply
                or (request.op in META and not _quiet_hides(request.op, reply.raw))
            ):
                out += reply.raw

    def _on_reply(self, _reply: Reply) -> None:
        self._watched = None
        self._advance()
        if self._out and not self._flush_requested:
            self._flush_requested = True
            self._flusher.request(self)
        self._parker.wake()

    def flush(self) -> None:
        """Write the output now; leave what the socket will not take to a writer task."""
        self._flush_requested = False
        out = self._out
        if self._closed:
            out.clear()
            return
        if self._write_blocked or not out:
            return
        try:
            sent = os.write(self._fd, out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._closed = True
            out.clear()
            self.scope.cancel()
            return
        if sent == len(out):
            out.clear()
            if self.proxy.terminating and not self._waiting:
                self.scope.cancel()  # drained during shutdown
            return
        del out[:sent]
        self._write_blocked = True
        assert self._nursery is not None
        self._nursery.start_soon(self._write_when_writable)

    async def _write_when_writable(self) -> None:
        # The client is not reading its replies: finish writing here, while the
        # session task stops reading (it parks while `_write_blocked`).
        out = self._out
        try:
            while out and not self._closed:
                await trio.lowlevel.wait_writable(self._socket)
                try:
                    sent = os.write(self._fd, out)
                except BlockingIOError:
                    continue
                except OSError:
                    self._closed = True
                    self.scope.cancel()
                    return
                del out[:sent]
        finally:
            self._write_blocked = False
            self._parker.wake()


class StreamSession:
    """Any `trio.abc.Stream` (TLS): the session task waits for its replies in order."""

    def __init__(self, proxy: Proxy, stream: trio.abc.Stream) -> None:
        self.proxy = proxy
        self.stream = stream
        self.busy = False
        self.scope = trio.CancelScope()
        self.parser = _parser_for(proxy)

    async def run(self) -> None:
        # A client that goes away mid-request has nothing left to be answered.
        with self.scope, contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._serve()

    async def _serve(self) -> None:
        parser = self.parser
        route = self.proxy.router.route
        limit = self.proxy.settings.max_outstanding
        while not self.proxy.terminating:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            self.busy = True
            parser.feed(data)
            while True:
                batch: list[Entry] = []
                status = route_buffered(parser, route, batch, limit)
                await self._answer(batch)
                if status is not Status.FULL:
                    break
            if status is Status.CLOSE:
                return
            self.busy = False

    async def _answer(self, batch: list[Entry]) -> None:
        out: list[bytes] = []
        send_all = self.stream.send_all
        for request, pending in batch:
            reply = pending.reply
            if reply is None:
                if out:
                    await send_all(b"".join(out))
                    out.clear()
                reply = await wait_for(pending)
            if shown(request, reply):
                out.append(reply.raw)
        if out:
            await send_all(b"".join(out))
