"""Client sessions: the I/O around the pure parser and the router.

A session parses everything a read delivered, routes all of it at once (routing is
synchronous; replies arrive through `Pending`s) and answers in request order, so
requests pipelined by one client are routed concurrently with no task or channel
per request. The `ClientReactor` reads every ready client (plain TCP, or TLS over a
`TLSSocket`) after one Trio wake-up, and the `SessionKeeper` owns the sessions'
lifetimes: a session has no task. Whichever task resolves the reply at the head
of a session's queue appends the ready replies to the session's output, and the
`WriteBatch` writes every touched session once per batch of backend replies. No
Trio wake-up is spent per request.

A session stops reading while `max_outstanding` requests are unanswered or while
its client does not read its replies, which bounds what one client can have in
flight, as memcached does. What the proxy holds for it (unwritten output, TLS
records not yet sent and buffered input) is bounded by `max_client_buffer`, in two
steps:

- at half the limit nothing more is routed for it, and a client that then reads
  nothing for `client_timeout` is disconnected (mcrouter's write timeout: a slow
  reader is not cut off for being slow);
- past the limit it is disconnected at once. Replies to requests already routed
  keep coming after routing stops, and what they add up to is not known in
  advance (a few kilobytes of `get`s can ask for gigabytes), so stopping the
  routing alone bounds nothing. Closing is the only bound that holds: a reply
  already asked of a shared server connection has to be read off it (other
  clients' replies follow it there), and a reply that cannot be kept cannot be
  delivered, so the connection it was for cannot go on either.

The half in between is the slack of a client that reads, only slowly: the replies
of what was routed before the mark was reached land there. A disconnected session
drops its queue and output; replies still in flight for it are read off the server
and dropped as they arrive (the destination keeps none: a `Pending` nobody holds
any more is freed once resolved). Counting costs nothing while the client reads:
what is held is only counted once its socket stops taking it, after each batch of
replies. Counted is what reached the output: a reply ready behind an earlier one
still in flight from a slower server waits in the queue until that one arrives or
times out, and a multi-get's reply is merged whole before it is one.

Output the socket does not take stays in the buffer it was in (`_sending`) and new
replies go to a new one, so neither a copy of the backlog per write nor, while it
is made, twice the memory; a TLS client's backlog is encrypted `TLS_PIECE` at a
time, as the socket takes it.

The end of a client's input (EOF after `shutdown(SHUT_WR)`, a TLS close_notify, or
the proxy shutting down) ends reading only: every complete request already read is
still routed, answered and flushed, and then the connection closes. A client that
half-closes after pipelining (`nc -N`, batch scripts) gets every reply.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import ssl
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mcrouter_trio.downstream._reactor import ClientReactor
from mcrouter_trio.messages import FIRST_ERROR, META, Op, Pending, Reply, Request, Result
from mcrouter_trio.protocol import (
    NEED_DATA,
    CloseConnection,
    ImmediateReply,
    RequestParser,
    TooLargeSet,
)
from mcrouter_trio.routing._base import Cancellable
from mcrouter_trio.transport._socket import WriteBatch
from mcrouter_trio.transport._tls import TLSSocket

if TYPE_CHECKING:
    from mcrouter_trio.downstream._server import Proxy

log = logging.getLogger("mcrouter_trio.downstream")

RECEIVE_SIZE: Final = 65536
#: Output to a TLS client is encrypted this much at a time while the socket takes it:
#: the encrypted copy of a backlog is never made whole.
TLS_PIECE: Final = 256 * 1024
_READ: Final = select.EPOLLIN

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
    entries: deque[Entry],
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


class ClientSession:
    """One client connection, whose I/O the `ClientReactor` does: no task per request.

    The reactor calls `on_readable`/`on_writable`; replies resolved by destination
    readers reach `_on_reply`, which moves the ready ones to the output and asks
    the `WriteBatch` for a write. There is no task per session: once finished, the
    session hands itself to the proxy's `SessionKeeper`, which unregisters it from
    the reactor and closes its connection.

    Thousands of idle connections each hold one, so it is slotted and holds little
    while idle: a plain connection is its descriptor (no socket object), and the
    request queue exists only while requests are in flight.
    """

    __slots__ = (
        "_abandoned", "_backlogged", "_buffer_limit", "_client_timeout", "_closing",
        "_drain_timer", "_finished", "_flush_requested", "_flusher", "_full", "_input_ended",
        "_keeper", "_limit", "_out", "_reactor", "_router", "_sending", "_timers", "_tls",
        "_waiting", "_watched", "_write_blocked",
        "fd", "interest", "parser", "proxy",
    )  # fmt: skip

    def __init__(
        self,
        proxy: Proxy,
        connection: int | TLSSocket,
        reactor: ClientReactor,
        flusher: WriteBatch,
    ) -> None:
        """Serve `connection`: a plain socket's descriptor (the session closes it), or TLS."""
        self.proxy = proxy
        self._keeper = proxy.keeper
        self.parser = _parser_for(proxy)
        #: TLS clients: replies are encrypted into the TLS socket's raw buffer.
        if isinstance(connection, TLSSocket):
            self.fd = connection.fd
            self._tls: TLSSocket | None = connection
        else:
            self.fd = connection
            self._tls = None
        #: The router itself, not its bound methods: each would cost a session 64 bytes.
        self._router = proxy.router
        self._reactor = reactor
        self._flusher = flusher
        self._timers = proxy.router.ctx
        # 0 means no limit, as in mcrouter.
        self._limit = proxy.settings.max_outstanding or sys.maxsize
        #: Requests in order, with their replies; None while there are none (an idle
        #: connection holds no queue: a deque is the largest part of a session).
        self._waiting: deque[Entry] | None = None
        #: The head reply `_on_reply` is registered on (at most one registration).
        self._watched: Pending | None = None
        self._out = bytearray()
        #: Output the socket did not take, written before `_out`: a view of the buffer it
        #: was in (see `_write_plain`).
        self._sending: memoryview | None = None
        self._flush_requested = False
        #: The client does not read its replies: stop reading its requests.
        self._write_blocked = False
        #: `max_outstanding` requests are unanswered: stop reading until some are.
        self._full = False
        #: Unwritten output and buffered input reached half `max_client_buffer`: route
        #: nothing more; `_drain_timer` disconnects the client if it reads nothing for
        #: `client_timeout` (`on_writable` restarts it).
        #: Past the whole limit it is disconnected at once (`_watch_backlog`).
        self._backlogged = False
        self._buffer_limit = proxy.settings.max_client_buffer or sys.maxsize
        self._client_timeout = proxy.settings.client_timeout
        #: A timer of the proxy's timer task rather than a cancel scope per session:
        #: idle connections are many, and a scope costs each one a few hundred bytes.
        self._drain_timer: Cancellable | None = None
        self._abandoned = False
        #: After `quit` (or input memcached closes on): answer what is left, then close.
        self._closing = False
        #: Nothing more will be read (EOF, close_notify, shutdown); complete requests
        #: already read are still routed and answered.
        self._input_ended = False
        self._finished = False
        #: The epoll interest currently registered (None: not registered).
        self.interest: int | None = None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def unanswered(self) -> int:
        """Requests read and routed whose reply has not gone to the output yet."""
        return len(self._waiting) if self._waiting is not None else 0

    def _unsent(self) -> int:
        unsent = len(self._out)
        if self._sending is not None:
            unsent += len(self._sending)
        return unsent + self._tls.raw_pending if self._tls is not None else unsent

    def _held(self) -> int:
        """Bytes held for this client: unsent output (TLS records too) and unparsed input.

        `_sending` counts whole, its part already sent too: the buffer it is a view of
        is freed only when the last of it is sent.
        """
        held = self._unsent() + self.parser.buffered
        sending = self._sending
        if sending is not None:
            held += memoryview(sending.obj).nbytes - len(sending)
        return held

    def start(self) -> None:
        """Register with the reactor: from now on it reads the client."""
        self._reactor.add(self)
        if self._tls is not None and self._tls.buffered:
            # Requests that came in one segment with the end of the handshake were
            # read with it: the socket will not signal them again.
            self._take_tls(self._tls, b"")

    def close_socket(self) -> None:
        """Close the connection (the keeper does, once the session is finished)."""
        if self._tls is None:
            os.close(self.fd)
        else:
            self._tls.socket.close()

    @property
    def abandoned(self) -> bool:
        """Disconnected for not reading its replies: nothing is left to deliver."""
        return self._abandoned

    def _disconnect_backlogged(self) -> None:
        self._drain_timer = None
        if not self._finished:
            self._abandon(
                f"over half --max-client-buffer and none of it read for "
                f"{self._client_timeout:g} s (--client-timeout)"
            )

    def _abandon(self, why: str) -> None:
        """Disconnect a client for what it holds: count it, log it, drop its replies."""
        self._abandoned = True
        self.proxy.stats.client_buffer_disconnects += 1
        log.info("client disconnected: %d bytes held for it, %s", self._held(), why)
        self._finish()

    def drain(self) -> None:
        """Shutdown: read nothing more; answer the requests already read, then finish."""
        if not self._finished:
            self._end_input()

    def stop(self) -> None:
        """The shutdown grace period is over: finish now, answered or not."""
        if not self._finished:
            self._finish()

    # -- called by the reactor -----------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._finish()  # reset by the client: nobody is left to answer
            return
        if not data:
            self._end_input()  # a half-close: the client still reads its replies
            return
        if self._tls is not None:
            self._take_tls(self._tls, data)
        else:
            self._take(data)

    def _take_tls(self, tls: TLSSocket, raw: bytes) -> None:
        try:
            data = tls.decrypt(raw)
        except ssl.SSLError:
            self._finish()  # a corrupt stream: nothing more can be read from it
            return
        if tls.raw_pending:
            self.flush()  # what TLS had to answer (a key update)
        if data:
            self._take(data)
        if tls.eof and not self._finished:
            # close_notify ends the client's writing only: its requests before it
            # are answered (TLS lets a peer go on writing after receiving one).
            self._end_input()

    def _take(self, data: bytes) -> None:
        """Parse and route what the client sent."""
        waiting = self._waiting
        if waiting is None or len(waiting) + 1 < self._limit:  # one more cannot fill it
            request = self.parser.take_plain_get(data)
            if request is not None:
                self._route_one(request)
                return
        self.parser.feed(data)
        self._route_input()

    def on_writable(self) -> None:
        self._write_blocked = False
        if self._drain_timer is not None:
            # The client read some of its replies: slow, not stuck. The clock measures
            # a stall, as mcrouter's write timeout does.
            self._drain_timer.cancel()
            self._drain_timer = self._timers.call_later(
                self._client_timeout, self._disconnect_backlogged
            )
        self.flush()
        if not self._write_blocked:
            if self._backlogged:
                self._watch_backlog()
            self._resume()

    def on_hangup(self) -> None:
        self._finish()

    def _end_input(self) -> None:
        """Read nothing more; route what is buffered, answer it all, then finish."""
        self._input_ended = True
        if self._full or self._closing:
            # `_resume` routes the rest once replies make room; `_closing` has none.
            self._check_done()
            self._update_interest()
        else:
            self._route_input()

    # -- routing and answering -------------------------------------------------------

    def _route_input(self) -> None:
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        status = route_buffered(self.parser, self._router.route, waiting, self._limit)
        if not self._finished:
            # A reply resolved while routing may have released the queue when it
            # emptied, before the rest of the requests were appended to it.
            self._waiting = waiting
        if status is Status.FULL:
            self._full = True
        elif status is Status.CLOSE or self._input_ended:
            # After the end of input, NEED_DATA means every complete request is routed
            # (a partial one at the end is dropped, as memcached drops it).
            self._closing = True
        self._advance()
        if self._out:
            self.flush()
        if status is Status.NEED_DATA and self.interest == _READ and not self._closing:
            return  # the usual case: still reading, nothing else changed
        self._check_done()
        self._update_interest()

    def _route_one(self, request: Request) -> None:
        """`_route_input` for a read that held one plain `get`, the commonest by far."""
        pending = self._router.route_get(request)
        waiting = self._waiting  # read after routing: a reply may have released it
        if waiting is None:
            waiting = self._waiting = deque()
        waiting.append((request, pending))
        self._advance()
        if self._out:
            self.flush()
        if self.interest != _READ or self._closing:
            self._check_done()
            self._update_interest()

    def _resume(self) -> None:
        """Route input held back by `max_outstanding` once replies went out."""
        if (
            self._full
            and (self._waiting is None or len(self._waiting) < self._limit)
            and not self._closing
            and not self._backlogged
        ):
            self._full = False
            self._route_input()
        else:
            self._check_done()
            self._update_interest()

    def _advance(self) -> None:
        """Move the replies ready at the head of the queue to the output, in order."""
        waiting = self._waiting
        if waiting is None:
            return
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
            if reply.result >= FIRST_ERROR:
                self.proxy.stats.request_error_count += 1  # one comparison per reply
            if (
                request is None
                or not request.noreply
                or (request.op in META and not _quiet_hides(request.op, reply.raw))
            ):
                out += reply.raw
        self._waiting = None  # every request answered: the connection may idle a while

    def _on_reply(self, _reply: Reply) -> None:
        self._watched = None
        if self._finished:
            return
        try:
            self._advance()
            if self._out and not self._flush_requested:
                self._flush_requested = True
                self._flusher.request(self)
            elif self._full or self._closing:
                self._resume()
        except Exception:
            # Runs in a destination's reader: a bug here must cost this client only.
            self.fail()

    def fail(self) -> None:
        """A bug while serving this client: log it and close this connection only."""
        log.exception("client session failed; closing its connection")
        self._finish()

    def flush(self) -> None:
        """Write the output; what the socket will not take waits for writability."""
        self._flush_requested = False
        out = self._out
        if self._finished:
            out.clear()
            return
        if not self._write_blocked:
            if self._tls is None:
                if (out or self._sending is not None) and not self._write_plain(out):
                    return
            elif (
                out or self._tls.raw_pending or self._sending is not None
            ) and not self._write_tls(self._tls, out):
                return
        else:
            self._watch_backlog()  # replies pile up behind a client that does not read
        if self._full or self._closing:
            self._resume()

    def _write_plain(self, out: bytearray) -> bool:
        """Write `_sending`, then `out`; False if the socket did not take it all.

        What the socket leaves of `out` stays where it is, as `_sending`, and replies
        go on into a new `_out`. Cutting the written part off `out` instead would
        make the next reply's append copy the whole backlog: a copy per write to a
        slow reader, and for the time of it twice the memory.
        """
        if self._sending is not None and not self._write_sending():
            return False
        if not out:
            return True
        try:
            sent = os.write(self.fd, out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._finish()
            return False
        if sent == len(out):
            out.clear()
            return True
        self._sending = memoryview(out)[sent:]
        self._out = bytearray()
        self._blocked()
        return False

    def _write_sending(self) -> bool:
        sending = self._sending
        assert sending is not None
        try:
            sent = os.write(self.fd, sending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._finish()
            return False
        if sent < len(sending):
            self._sending = sending[sent:]
            self._blocked()
            return False
        self._sending = None  # frees the buffer it was part of
        return True

    def _write_tls(self, tls: TLSSocket, out: bytearray) -> bool:
        try:
            if self._sending is None and len(out) <= TLS_PIECE:
                if out:
                    tls.encrypt(out)
                    out.clear()
                done = tls.write_some()
            else:
                done = self._write_tls_pieces(tls, out)
        except (OSError, ssl.SSLError):
            self._finish()
            return False
        if not done:
            self._blocked()
        return done

    def _write_tls_pieces(self, tls: TLSSocket, out: bytearray) -> bool:
        """Encrypt and write `_sending`, then `out`, a `TLS_PIECE` at a time while taken."""
        done = tls.write_some()
        while done and (out or self._sending is not None):
            sending = self._sending
            if sending is None:
                sending = memoryview(out)  # left where it is, as in `_write_plain`
                self._out = out = bytearray()
            tls.encrypt(sending[:TLS_PIECE])
            self._sending = sending[TLS_PIECE:] or None
            done = tls.write_some()
        return done

    def _blocked(self) -> None:
        self._write_blocked = True
        self._watch_backlog()
        self._update_interest()

    def _watch_backlog(self) -> None:
        """Disconnect the client past the limit; run the drain clock past half of it."""
        held = self._held()
        if held > self._buffer_limit:
            self._abandon("over --max-client-buffer")
            return
        over = 2 * held >= self._buffer_limit
        if over != self._backlogged:
            self._backlogged = over
            if over:
                self._drain_timer = self._timers.call_later(
                    self._client_timeout, self._disconnect_backlogged
                )
            elif self._drain_timer is not None:
                self._drain_timer.cancel()
                self._drain_timer = None

    def _check_done(self) -> None:
        if self._closing and not self._waiting and not self._unsent() and not self._finished:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        # From now on nothing may be written: the descriptor is about to close and
        # its number may be reused by another client.
        self._finished = True
        self._full = False  # nothing more is routed for it (`_resume`)
        self._out.clear()
        self._sending = None
        self._waiting = None  # replies still in flight are dropped as they arrive
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self._keeper.finished(self)

    def _update_interest(self) -> None:
        if self._finished:
            wanted = 0
        elif self._write_blocked:
            wanted = select.EPOLLOUT
        elif self._full or self._closing or self._input_ended:
            wanted = 0
        else:
            wanted = select.EPOLLIN
        if wanted != self.interest and self.interest is not None:
            self._reactor.modify(self, wanted)
