"""Destinations: one shared, pipelined connection per backend server.

Every client session sends through the same `Destination`. `send()` is
synchronous: it appends the request's bytes to an output buffer and its `Pending`
to a FIFO, and wakes the writer. The writer sends everything buffered with one
`send_all`, so requests from many clients leave in one write (twemproxy-style
batching). The reader frames replies and resolves the FIFO head in order.

With `batch_gets` (TLS servers by default), the single-key gets routed in one pass
leave as one multi-key `get`, whose reply is split back per key: memcached -Z puts
every reply in a TLS record of its own, so each get batched saves a record's
encryption on the server and its decryption here, and the server parses one command.

Failure handling keeps one invariant: a reply never reaches the wrong request.
When the reply stream breaks (reset, EOF, garbage, or the head request timing out,
which would leave a late reply in the stream) the connection is closed and every
request still waiting on it gets an error reply. The next request reconnects.

Timeouts are fair to requests queued behind other clients' traffic: the head of the
FIFO times out only once its server has kept it waiting in silence for its timeout,
counted from the write that carried it and from the last byte the server sent
(`_watchdog`). A request's clock therefore starts when its bytes are handed to the
server, not when it is queued, and a megabyte reply being read, or a long pipeline
being answered, keeps the connection alive; a server that stops sending, before or
in the middle of a reply, still times out.

The same clock times replies (`latencies`, a histogram of plain counts): a reply's
latency runs from its request's write to the read that completed it. The reader reads
the clock once per read, shared by every reply the read completes, so the cost per
reply is a subtraction, a bisect and two additions.

Health (`_health.py`): reply timeouts and connect failures are reported to the
server's `TkoTracker`. While the server is TKO, or while the destination waits out a
reconnect backoff, `send` answers at once with the reply in `_refuse` and sends
nothing: the only check on the request path is that one attribute.

Task tree per destination (owned by the proxy's destination nursery):
`run()` runs the health monitor (probes while this destination holds its server
TKO) beside the connection loop, which connects lazily, one connect at a time, and
per connection runs a nursery with the reader, the writer and a timeout watchdog.
"""

from __future__ import annotations

import logging
import random
import ssl
import sys
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Final, TypeAlias

import trio

from mcrouter_trio.counters import (
    LATENCY_BOUNDS,
    Latencies,
    ProxyCounters,
    ServerCounters,
    count_result,
)
from mcrouter_trio.messages import Op, Pending, Reply, Request, Result, error_reply
from mcrouter_trio.protocol import GetBatchFramer, GetProgress, ReplyStreamError, frame_reply
from mcrouter_trio.routing._combinators import FAILURES
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.tls._contexts import SessionCache, describe_ssl_error
from mcrouter_trio.transport._socket import FastSocketIO, Parker, WriteBatch
from mcrouter_trio.transport._tls import TLSSocket
from mcrouter_trio.upstream._health import Backoff, HealthSettings, ProbeSchedule, TkoTracker

log = logging.getLogger("mcrouter_trio.upstream")

RECEIVE_SIZE: Final = 65536
DEFAULT_MAX_PENDING: Final = 100_000

_TIMEOUT: Final = error_reply(Result.TIMEOUT, "Reply timeout")
_BUSY: Final = error_reply(Result.BUSY, "307 busy")
_STOPPED: Final = error_reply(Result.LOCAL_ERROR, "destination closed")
_PROBE: Final = b"version\r\n"

#: Taken once per write to a server and once per read from it: the monotonic clock
#: is a C call, where trio.current_time() is three Python ones.
_now = time.monotonic
#: How often, in parts of a timeout, the watchdog looks for bytes from a server that
#: has requests to answer: the silence it tolerates is at most 1 + 1/LOOKS timeouts.
_LOOKS: Final = 4
#: One write to the server, shared by every request whose bytes it carries: a
#: one-item list holding when they were handed to the server (a list is the cheapest
#: mutable cell: one is made per write), `_UNWRITTEN` until then. One clock read per
#: write, however many requests it carries; a second when the socket made it wait.
_Write: TypeAlias = list[float]
_UNWRITTEN: Final = float("inf")

SSLContextSource = Callable[[], ssl.SSLContext]
_SessionSource = tuple[TLSSocket, ssl.SSLContext]
#: Most keys one batched get carries (memcached takes any number; this bounds a line).
MAX_GET_BATCH: Final = 100
#: A global rather than `Op.GET_BATCH`: the read loop compares every reply's op with it.
_GET_BATCH: Final = Op.GET_BATCH


class _GetBatch:
    """A FIFO entry for a batched get: its framer and the Pending of each key."""

    __slots__ = ("framer", "pendings")

    def __init__(self, keys: list[bytes], pendings: list[Pending], results: ProxyCounters) -> None:
        self.framer = GetBatchFramer(keys, results)
        self.pendings = pendings

    def resolve(self, reply: Reply) -> None:
        """One reply (an error) for every key."""
        for pending in self.pendings:
            try:
                pending.resolve(reply)
            except Exception as exc:
                reply_callback_failed(exc)

    def resolve_framed(self) -> None:
        """Each key's own reply, once the framer has framed them."""
        for pending, reply in zip(self.pendings, self.framer.replies, strict=True):
            try:
                pending.resolve(reply)
            except Exception as exc:
                reply_callback_failed(exc)


class Destination:
    """The pipelined connection to one server, shared by every client session."""

    def __init__(
        self,
        server: ServerSpec,
        *,
        ssl_context: SSLContextSource | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        client_writes: WriteBatch | None = None,
        backend_writes: WriteBatch | None = None,
        batch_gets: bool | None = None,
        tracker: TkoTracker | None = None,
        health: HealthSettings | None = None,
        rng: random.Random | None = None,
        census: Callable[[], str] | None = None,
        counters: ProxyCounters | None = None,
    ) -> None:
        self.server = server
        #: The proxy's counters: requests' results (`result_*`) and connections.
        self._counters = counters if counters is not None else ProxyCounters()
        self.connect_timeout = server.connect_timeout_ms / 1000
        # 0 means no limit (as `--max-client-outstanding-reqs 0` does).
        self.max_pending = max_pending or sys.maxsize
        self.stats = ServerCounters()
        #: Seconds from a request's write to its reply, per reply read (`_read_loop`).
        self.latencies = Latencies()
        self.state = "new"
        self._ssl_context = ssl_context
        self._tls_sessions = SessionCache()
        # The TLS connection whose session is not stored yet (see _remember_tls_session).
        self._tls_session_source: _SessionSource | None = None
        # (op, pending, timeout, write) per request written or waiting to be written;
        # a batched get is one entry (op GET_BATCH) for all its keys.
        self._queue: deque[tuple[Op, Pending | _GetBatch, float, _Write]] = deque()
        #: The write that will carry the requests queued from now on.
        self._write: _Write = [_UNWRITTEN]
        #: Reads that left the head's reply unfinished. With the head being answered,
        #: the watchdog's sign that the server is sending (see `_watchdog`).
        self._unfinished_reads = 0
        #: Keys in the queue's batched gets beyond one per entry (for `pending_count`).
        self._batched_extra = 0
        self._out = bytearray()
        #: Send single-key gets of one pass as one multi-key get (None: on TLS servers).
        self.batch_gets = ssl_context is not None if batch_gets is None else batch_gets
        #: The single-key gets routed in this pass, not on the output yet, and the
        #: longest timeout among them.
        self._get_keys: list[bytes] = []
        self._get_pendings: list[Pending] = []
        self._get_timeout = 0.0
        self._work = Parker()
        self._client_writes = client_writes or WriteBatch()
        self._backend_writes = backend_writes or WriteBatch()
        #: The connection's I/O while one is up, for `flush` to write on directly.
        self._io: FastSocketIO | TLSSocket | None = None
        #: The writer task is parked with nothing to write and nobody has woken it:
        #: only then may `flush` write, so bytes never overtake what the writer holds.
        self._writer_idle = False
        self._write_error: BaseException | None = None
        self._break_reply: Reply | None = None
        #: While set, `send` answers every request with it at once and sends nothing:
        #: the server is TKO, a reconnect backoff is running, or the destination stopped.
        self._refuse: Reply | None = None
        self._stopped = False
        #: The last failure's reply while a reconnect backoff runs.
        self._down_reply: Reply | None = None
        self._backoff = Backoff()
        #: The last connect failed (its failure was logged; the next ones are not).
        self._connect_failing = False
        #: The server's TKO state, shared with other destinations to its host:port
        #: (None: `--disable-tko-tracking`).
        self.tracker = tracker
        if tracker is not None:
            tracker.destinations.append(self)
        self._health = health or HealthSettings()
        self._rng = rng or random.Random()
        #: "N of M servers up", for the log lines of state changes.
        self._census = census or (lambda: "")
        #: The reader reports the next reply to the tracker and the backoff (set on a
        #: new connection and after a timeout): one attribute test per read.
        self._watch_replies = False
        #: This connection has read a reply.
        self._replied = False
        self.probing = False
        #: A connect is under way (the state keeps its last value meanwhile, as
        #: mcrouter's does; `stats servers` shows `connecting:1` among its own fields).
        self.connecting = False
        self._probes_this_tko = 0
        self._probe_wanted = Parker()
        #: No route tree uses this server any more: close once idle (`retire`).
        self._retired = False

    def __repr__(self) -> str:
        return f"<Destination {self.server.address} {self.status}>"

    @property
    def status(self) -> str:
        """`[soft_tko|hard_tko] new|up|down|closed [connecting] [probing]`, for log lines
        and repr."""
        tko = [self.tracker.state] if self.tracker is not None else []
        return " ".join(word for word in [*tko, *self.state_words()] if word)

    def state_words(self) -> list[str]:
        """The connection state, then `connecting` while a connect is under way and
        `probing` while a probe is out (`stats servers` counts each over workers)."""
        words = [self.state]
        if self.connecting:
            words.append("connecting")
        if self.probing:
            words.append("probing")
        return words

    @property
    def pending_count(self) -> int:
        """Requests sent or waiting to be, each key of a batched get counted."""
        return len(self._queue) + self._batched_extra + len(self._get_keys)

    def outstanding(self) -> tuple[int, int]:
        """`pending_count` split as mcrouter's `stats servers` splits it: (pending,
        inflight), the requests not handed to the server yet and those written to it
        and awaiting their reply.

        Worked out from the queue's write stamps when stats are asked for, so the
        request path keeps a single count.
        """
        inflight = 0
        for _op, pending, _timeout, write in self._queue:
            if write[0] != _UNWRITTEN:
                inflight += len(pending.pendings) if isinstance(pending, _GetBatch) else 1
        return self.pending_count - inflight, inflight

    # -- called by route handles (synchronous, any task) ----------------------------

    def send(self, request: Request, timeout: float) -> Pending:
        """Queue `request`; its reply is an error if none came within `timeout` seconds."""
        refuse = self._refuse
        if refuse is not None:
            self.stats.failed_fast += 1
            count_result(self._counters, refuse.result)
            return Pending(refuse)
        queue = self._queue
        get_keys = self._get_keys
        # `pending_count`, inlined: this is the request path.
        if len(queue) + self._batched_extra + len(get_keys) >= self.max_pending:
            count_result(self._counters, Result.BUSY)
            return Pending(_BUSY)
        pending = Pending()
        out = self._out
        first = not out and not get_keys
        keys = request.keys
        if self.batch_gets and request.op is Op.GET and (keys is None or len(keys) == 1):
            if len(get_keys) == MAX_GET_BATCH:
                self._emit_gets()
                get_keys = self._get_keys
            get_keys.append(request.key)
            self._get_pendings.append(pending)
            if timeout > self._get_timeout:
                self._get_timeout = timeout
        else:
            if get_keys:
                self._emit_gets()  # keep the server's order the order requests came in
            if request.quiet_forwarded:
                # The backend may stay silent; `mn` always answers, keeping the FIFO aligned.
                queue.append((Op.MA_QUIET, pending, timeout, self._write))
                out += request.to_wire() + b"mn\r\n"
            else:
                queue.append((request.op, pending, timeout, self._write))
                wire = request.wire
                out += wire if wire is not None else request.to_wire()
        self.stats.requests += 1
        if first:
            # The first request of a batch: the rest join the same write.
            if self._writer_idle:
                self._backend_writes.request(self)  # `flush` at the end of the batch
            else:
                self._work.wake()  # connect, or the writer takes it after its write
        return pending

    def _emit_gets(self) -> None:
        """Put the gets gathered so far on the output: one `get` with all their keys."""
        keys = self._get_keys
        pendings = self._get_pendings
        self._get_keys = []
        self._get_pendings = []
        timeout = self._get_timeout
        self._get_timeout = 0.0
        if len(keys) == 1:
            self._queue.append((Op.GET, pendings[0], timeout, self._write))
            self._out += b"get " + keys[0] + b"\r\n"
        else:
            batch = _GetBatch(keys, pendings, self._counters)
            self._queue.append((_GET_BATCH, batch, timeout, self._write))
            self._batched_extra += len(keys) - 1
            self.stats.get_batches += 1
            self._out += b"get " + b" ".join(keys) + b"\r\n"

    def flush(self) -> None:
        """Write the queued requests now (`WriteBatch`), unless the writer owns the output.

        Writing here rather than in the writer task saves a Trio task switch per
        batch. Whatever the socket does not take now, or an error, goes to the writer.
        """
        if not self._writer_idle:
            return
        if self._get_keys:
            self._emit_gets()
        out = self._out
        if not out:
            return
        io = self._io
        if io is None:
            self._wake_writer()
            return
        self.stats.batches += 1
        self._write[0] = _now()  # the queued requests are the server's from here
        try:
            if isinstance(io, TLSSocket):
                self._out = bytearray()
                io.encrypt(out)
                if io.write_some():
                    self._write = [_UNWRITTEN]
                else:
                    self._wake_writer()  # it stamps this write again when it is done
                return
            sent = io.write_now(out)
        except (OSError, ssl.SSLError) as exc:
            self._write_error = exc
            self._wake_writer()
            return
        if sent < len(out):
            del out[:sent]
            self._wake_writer()  # it stamps this write again when it is done
        else:
            out.clear()
            self._write = [_UNWRITTEN]

    @property
    def refusing(self) -> bool:
        """Whether requests are answered at once, unsent (TKO, reconnect backoff, stopped)."""
        return self._refuse is not None

    def retire(self) -> None:
        """The server left the config: finish what is queued, then close and end `run`.

        A request sent meanwhile (by a route tree still finishing) is served first.
        """
        self._retired = True
        self._work.wake()

    def reinstate(self) -> None:
        """A new config uses the server again: keep the destination open."""
        self._retired = False

    # -- health (called by this destination's tasks and its TkoTracker) --------------

    def refresh_refusal(self) -> None:
        """Work out what `send` answers at once with, after any change of state."""
        if self._stopped:
            self._refuse = _STOPPED
        elif self.tracker is not None and self.tracker.refusal is not None:
            self._refuse = self.tracker.refusal
        else:
            self._refuse = self._down_reply

    def watch_replies(self) -> None:
        """Have the reader report the next reply (it ends a run of failures)."""
        self._watch_replies = True

    def _reply_seen(self) -> None:
        self._watch_replies = False
        self._replied = True
        self._backoff.failures = 0
        if self.tracker is not None:
            self.tracker.record_reply()

    def start_probing(self) -> None:
        """This destination marked its server TKO: its health monitor probes it."""
        self._probes_this_tko = 0
        self._probe_wanted.wake()

    async def _monitor(self, tracker: TkoTracker) -> None:
        """Probe the server while this destination is the one holding it TKO.

        A probe is a `version` on the normal connection (connecting first if needed),
        under the server's timeout; the schedule goes on while one is in flight, but
        never sends a second.
        """
        while True:
            while tracker.responsible is not self:
                await self._probe_wanted.park()
            schedule = ProbeSchedule(self._health)
            while tracker.responsible is self:
                await trio.sleep(schedule.next_delay(self._rng))
                if tracker.responsible is self and not self.probing:
                    self._send_probe(tracker)

    def _send_probe(self, tracker: TkoTracker) -> None:
        self.probing = True
        self._probes_this_tko += 1
        self.stats.probes += 1
        number = self._probes_this_tko
        if self._get_keys:
            self._emit_gets()
        first = not self._out
        pending = Pending()
        self._queue.append((Op.VERSION, pending, self.server.timeout, self._write))
        self._out += _PROBE
        pending.then(lambda reply: self._probe_done(tracker, reply, number))
        if first:
            if self._writer_idle:
                self._backend_writes.request(self)
            else:
                self._work.wake()

    def _probe_done(self, tracker: TkoTracker, reply: Reply, number: int) -> None:
        self.probing = False
        if not reply.is_error:
            tracker.probe_answered(self, number)

    def fail(self) -> None:
        """A bug in `flush`: leave the output to the writer task."""
        log.exception("server %s: writing a batch failed", self.server.address)
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._writer_idle = False
        self._work.wake()

    # -- the destination's own tasks ------------------------------------------------

    async def run(self) -> None:
        """The health monitor and the connection loop. Runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self.tracker is not None:
                    nursery.start_soon(
                        self._monitor, self.tracker, name=f"probes {self.server.address}"
                    )
                await self._connection_loop()
                nursery.cancel_scope.cancel()  # retired: the probes end too
        finally:
            self._stopped = True
            self.refresh_refusal()
            if self.tracker is not None:
                self.tracker.detach(self)
            self._fail_all(error_reply(Result.LOCAL_ERROR, "proxy shutting down"))

    async def _connection_loop(self) -> None:
        """Connect when there is work, serve the connection, repeat; back off on failures."""
        while True:
            while not self._queue and not self._get_keys:
                if self._retired:
                    log.info("server %s: no longer in the config; closed", self.server.address)
                    return
                await self._work.park()
            stream = await self._connect()
            if stream is None:
                assert self._break_reply is not None
                await self._back_off(self._break_reply)
                continue
            reason = await self._serve(stream)
            if not self._replied and reason is not _TIMEOUT:
                # Closed before a single reply (timeouts are soft TKO's business).
                await self._back_off(reason)

    async def _back_off(self, reply: Reply) -> None:
        """After a failed connection, wait before the next; meanwhile fail requests fast.

        Not while the server is TKO: then requests are refused anyway and the probes
        pace the reconnects.
        """
        if self.tracker is not None and self.tracker.refusal is not None:
            return
        delay = self._backoff.delay(self._rng)
        if delay <= 0:
            return
        self._down_reply = reply
        self.refresh_refusal()
        try:
            await trio.sleep(delay)
        finally:
            self._down_reply = None
            self.refresh_refusal()

    async def _connect(self) -> trio.abc.Stream | None:
        # The state stays what it was until the connect ends, as mcrouter's does.
        self.connecting = True
        try:
            return await self._dial()
        finally:
            self.connecting = False

    async def _dial(self) -> trio.abc.Stream | None:
        try:
            with trio.fail_after(self.connect_timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(
                    self.server.host, self.server.port
                )
                if self._ssl_context is not None:
                    stream = await self._start_tls(stream, self._ssl_context())
        except trio.TooSlowError:
            self._connect_failed(error_reply(Result.CONNECT_TIMEOUT, "connection timeout"), None)
            return None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            self._connect_failed(error_reply(Result.CONNECT_ERROR, "connection error"), exc)
            return None
        self.stats.connects += 1
        self._counters.num_connections_opened += 1
        self._connect_failing = False
        self.state = "up"
        log.info("server %s up (%s)", self.server.address, self._census())
        return stream

    async def _start_tls(self, tcp: trio.abc.Stream, context: ssl.SSLContext) -> TLSSocket:
        """Handshake, offering the last session so a reconnect can skip the full handshake."""
        host, port = self.server.host, self.server.port
        offered = self._tls_sessions.get(host, port, context)
        try:
            tls = await self._handshake(tcp, context, offered)
        except (ssl.SSLError, OSError):
            if offered is None:
                raise
            # Some servers fail a resumed handshake instead of falling back to a full one
            # (memcached 1.6.18 with client verification but no session cache). Retry once
            # without a session; only if that works was the session the problem.
            self._tls_sessions.discard(host, port)
            tcp = await trio.open_tcp_stream(host, port)
            tls = await self._handshake(tcp, context, None)
            self._tls_sessions.disable(host, port)
            log.warning(
                "server %s: a resumed TLS handshake failed but a full one worked; "
                "no longer resuming TLS sessions with it",
                self.server.address,
            )
        self.stats.tls_handshakes += 1
        counters = self._counters
        counters.num_ssl_connections_opened += 1
        if offered is not None:
            counters.num_ssl_resumption_attempts += 1
        if tls.session_reused:
            self.stats.tls_resumed += 1
            counters.num_ssl_resumption_successes += 1
        log.info(
            "server %s: %s handshake (%s)",
            self.server.address,
            tls.version(),
            "resumed session" if tls.session_reused else "full",
        )
        self._tls_session_source = (tls, context)
        return tls

    async def _handshake(
        self, tcp: trio.abc.Stream, context: ssl.SSLContext, session: ssl.SSLSession | None
    ) -> TLSSocket:
        assert isinstance(tcp, trio.SocketStream)
        hostname = self.server.server_name or self.server.host
        tls = TLSSocket(tcp, context, server_hostname=hostname, session=session)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    def _remember_tls_session(self) -> None:
        """Store the connection's session for the next reconnect; once, after the first read.

        Not right after the handshake: TLS 1.3 servers send their session tickets after it,
        ahead of the first reply, and a session without a ticket cannot be resumed. A server
        that sent none by then is not asked again, which keeps the read loop's cost at one
        attribute test.
        """
        assert self._tls_session_source is not None
        tls, context = self._tls_session_source
        self._tls_session_source = None
        session = tls.session
        if session is None or (not session.has_ticket and tls.version() == "TLSv1.3"):
            return
        self._tls_sessions.put(self.server.host, self.server.port, context, session)

    def _connect_failed(self, reply: Reply, exc: BaseException | None) -> None:
        self.stats.connect_failures += 1
        self.state = "down"
        self._break_reply = reply
        why = "timeout" if exc is None else _describe(exc)
        if not self._connect_failing:
            self._connect_failing = True
            log.warning(
                "server %s down: connect failed: %s (%s)",
                self.server.address,
                why,
                self._census(),
            )
        else:
            log.debug("server %s: connect failed again: %s", self.server.address, why)
        if self.tracker is not None:
            self.tracker.record_connect_failure(self, reply.result)
        self._fail_all(reply)

    async def _serve(self, stream: trio.abc.Stream) -> Reply:
        """Serve one connection until it breaks; the reply its pending requests got."""
        self._break_reply = None
        self._write_error = None
        self._replied = False
        self._watch_replies = True
        io: FastSocketIO | trio.abc.Stream = (
            FastSocketIO(stream) if type(stream) is trio.SocketStream else stream
        )
        self._io = io if type(io) is FastSocketIO or type(io) is TLSSocket else None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, io, nursery.cancel_scope)
                nursery.start_soon(self._write_loop, io, nursery.cancel_scope)
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
        finally:
            self._io = None
            self._writer_idle = False
            self.state = "closed"
            self._counters.num_connections_closed += 1
            if self._ssl_context is not None:
                self._counters.num_ssl_connections_closed += 1
            await trio.aclose_forcefully(stream)
            reason = self._break_reply or error_reply(Result.REMOTE_ERROR, "remote error")
            if reason is _TIMEOUT and self.tracker is not None:
                # Each request failed by the timeout counts, as each would time out on
                # its own in mcrouter; marking first lets routes that move on from
                # these replies find the server TKO already.
                self.tracker.record_timeouts(self, self.pending_count)
            self._fail_all(reason)
        return reason

    def _broken(self, scope: trio.CancelScope, reply: Reply, why: object) -> None:
        if self._break_reply is None:
            self._break_reply = reply
            log.warning("server %s: closing connection: %s", self.server.address, _describe(why))
        scope.cancel()

    async def _write_loop(
        self, stream: FastSocketIO | trio.abc.Stream, scope: trio.CancelScope
    ) -> None:
        tls = stream if isinstance(stream, TLSSocket) else None
        try:
            while True:
                if self._write_error is not None:
                    raise self._write_error
                if self._get_keys:
                    self._emit_gets()
                if not self._out and not (tls is not None and tls.raw_pending):
                    if self._retired and not self._queue:
                        scope.cancel()  # idle and no longer in the config
                        return
                    self._writer_idle = True
                    try:
                        await self._work.park()
                    finally:
                        self._writer_idle = False
                    continue
                data, self._out = self._out, bytearray()
                # The requests in `data`, and those of a write `flush` began.
                write, self._write = self._write, [_UNWRITTEN]
                if data:
                    self.stats.batches += 1
                    write[0] = _now()
                # With nothing new, a TLS send finishes what `flush` left encrypted.
                await stream.send_all(data)
                # The socket may have made this write wait: the server has the last of
                # its requests only now, and cannot have answered them before.
                write[0] = _now()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._broken(scope, error_reply(Result.REMOTE_ERROR, "remote error"), exc)

    async def _read_loop(
        self, stream: FastSocketIO | trio.abc.Stream, scope: trio.CancelScope
    ) -> None:
        queue = self._queue
        client_writes = self._client_writes
        backend_writes = self._backend_writes
        latencies = self.latencies
        latency_counts = latencies.counts
        bounds = LATENCY_BOUNDS
        bucket_of = bisect_left  # a local, not a global to look up per reply
        buf: bytes | bytearray = b""
        pos = 0
        # A long get reply is walked once, not once per read; error lines are counted.
        progress = GetProgress(self._counters)
        try:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                # Every reply this read completes is dated by this one clock read.
                now = _now()
                if not data:
                    self._broken(scope, error_reply(Result.REMOTE_ERROR, "remote error"), "EOF")
                    return
                if pos == len(buf):
                    buf, pos = data, 0
                else:
                    if isinstance(buf, bytes):
                        buf = bytearray(buf[pos:])
                        pos = 0
                    buf += data
                # Sessions whose replies resolve here are written once, at the end, and
                # so are servers that routes answering these replies sent requests to.
                start = pos
                waited = 0.0  # the seconds the replies of this read took, together
                client_writes.hold()
                backend_writes.hold()
                try:
                    while queue:
                        op, pending, _timeout, write = queue[0]
                        if op is _GET_BATCH:
                            assert isinstance(pending, _GetBatch)
                            after = pending.framer.frame(buf, pos)
                            if after is None:
                                self._unfinished_reads += 1
                                break
                            pos = after
                            queue.popleft()
                            keys = len(pending.pendings)
                            self._batched_extra -= keys - 1
                            self.stats.replies += keys
                            # Each key is a request, answered when the batch is.
                            elapsed = now - write[0]
                            latency_counts[bucket_of(bounds, elapsed)] += keys
                            waited += elapsed * keys
                            pending.resolve_framed()
                            continue
                        framed = frame_reply(buf, pos, op, progress)
                        if framed is None:
                            self._unfinished_reads += 1
                            break
                        reply, pos = framed
                        queue.popleft()
                        self.stats.replies += 1
                        elapsed = now - write[0]
                        latency_counts[bucket_of(bounds, elapsed)] += 1
                        waited += elapsed
                        try:
                            pending.resolve(reply)
                        except Exception as exc:
                            reply_callback_failed(exc)
                    else:
                        if pos < len(buf):
                            raise ReplyStreamError("data received with no request pending")
                finally:
                    latencies.sum += waited
                    backend_writes.release()
                    client_writes.release()
                if self._watch_replies and pos != start:
                    self._reply_seen()
                if self._retired and not queue:
                    scope.cancel()  # idle and no longer in the config
                    return
                if self._tls_session_source is not None:
                    self._remember_tls_session()
                if isinstance(buf, bytearray) and pos > RECEIVE_SIZE:
                    del buf[:pos]
                    pos = 0
        except ReplyStreamError as exc:
            self._broken(scope, error_reply(Result.REMOTE_ERROR, "remote error"), exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._broken(scope, error_reply(Result.REMOTE_ERROR, "remote error"), exc)

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        """Close the connection once the server keeps the FIFO head waiting in silence.

        The head times out when its timeout has passed both since its bytes were
        handed to the server (its `_Write`) and since the server last sent a byte.
        memcached answers a connection's requests in order, so a request behind a
        megabyte reply or a long pipeline is not late while the bytes before its
        reply are still coming.
        Only the head is watched: every request behind it waits for its reply anyway.

        The reader does not tell this task when it heard the server: a new head (a
        reply finished) or a read that left the head's reply unfinished is dated by
        this task when it looks, a few times per timeout while requests are pending,
        so silence is measured to within 1/_LOOKS of a timeout (never shorter) at no
        cost per request.
        """
        queue = self._queue
        head_seen: object = None  # the head at the last look
        unfinished_seen = self._unfinished_reads
        heard_at = 0.0  # when a look last found that the server had sent something
        second_look = False
        while True:
            now = _now()
            head = queue[0] if queue else None
            heard = (
                head_seen is not None and head is not head_seen
            ) or self._unfinished_reads != unfinished_seen
            head_seen = head  # kept only until the next look
            if heard:
                unfinished_seen = self._unfinished_reads
                heard_at = now
            if head is None:
                # Idle: look as seldom as the timeout allows. Replies flowing: look
                # soon, so that the next head's wait is dated closely.
                timeout = self.server.timeout
                second_look = False
                await trio.sleep(timeout / _LOOKS if heard else timeout)
                continue
            _op, _pending, timeout, write = head
            deadline = max(write[0], heard_at) + timeout
            if now < deadline:
                second_look = False
                await trio.sleep(min(deadline - now, timeout / _LOOKS))
                continue
            if not second_look:
                # The reader may have been woken with this task, by bytes that came in
                # time while the proxy was busy: let it run, then look again.
                second_look = True
                await trio.lowlevel.checkpoint()
                continue
            self._broken(scope, _TIMEOUT, "reply timeout")
            return

    def _fail_all(self, reply: Reply) -> None:
        if self._get_keys:
            self._emit_gets()
        self._out = bytearray()
        self._write = [_UNWRITTEN]  # not stamped by a write that never finished
        queue = self._queue
        counters = self._counters
        while queue:
            op, pending, _timeout, _write = queue.popleft()
            if isinstance(pending, _GetBatch):
                self._batched_extra -= len(pending.pendings) - 1
                self.stats.errors += len(pending.pendings)
                count_result(counters, reply.result, len(pending.pendings))
            else:
                self.stats.errors += 1
                if op is not Op.VERSION:  # a probe is the proxy's, not a client's request
                    count_result(counters, reply.result)
            try:
                pending.resolve(reply)
            except Exception as exc:
                reply_callback_failed(exc)


def reply_callback_failed(exc: Exception) -> None:
    """A callback on a reply raised: record it and go on with the other replies.

    Routing's combinators and the sessions guard their own callbacks; this is the
    last line, so that a bug there can never stop a reader that serves every client.
    """
    FAILURES.record("reply callback", exc)


def _describe(why: object) -> object:
    # Trio reports TLS failures as a bare BrokenResourceError with the ssl error as its
    # cause; with TLS 1.3 a refused client certificate only shows up on the first read.
    if isinstance(why, trio.BrokenResourceError) and why.__cause__ is not None:
        return describe_ssl_error(why.__cause__)
    if isinstance(why, OSError):
        return describe_ssl_error(why)
    return why
