"""Requests, replies and result codes: the vocabulary every layer shares.

A `Request` is one parsed client command, already validated the way memcached 1.6
validates it, so that a route handle can forward it without re-checking anything.
Numeric tokens (flags, exptime, cas) are kept as the bytes the client sent: the
backend applies its own truncation rules to them, which keeps the proxy exact
without re-implementing them.

A `Reply` carries the exact bytes a backend (or the proxy) produced plus a
`Result` classification that routing logic uses (hit or miss, worst of several,
failover-worthy error).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, NamedTuple

import attrs


class Op(enum.IntEnum):
    """Commands the proxy routes or answers itself."""

    GET = enum.auto()
    GETS = enum.auto()
    GAT = enum.auto()
    GATS = enum.auto()
    SET = enum.auto()
    ADD = enum.auto()
    REPLACE = enum.auto()
    APPEND = enum.auto()
    PREPEND = enum.auto()
    CAS = enum.auto()
    DELETE = enum.auto()
    INCR = enum.auto()
    DECR = enum.auto()
    TOUCH = enum.auto()
    FLUSH_ALL = enum.auto()
    VERSION = enum.auto()
    VERBOSITY = enum.auto()
    STATS = enum.auto()
    QUIT = enum.auto()
    SHUTDOWN = enum.auto()
    MG = enum.auto()
    MS = enum.auto()
    MD = enum.auto()
    MA = enum.auto()
    MN = enum.auto()
    ME = enum.auto()
    #: Framing only (never a request's op): an `ma` forwarded with its `q` flag and
    #: followed by `mn`, so the backend's answer is either one reply and MN, or MN.
    MA_QUIET = enum.auto()
    #: Framing only: single-key gets from any clients, sent as one multi-key `get`.
    GET_BATCH = enum.auto()


#: The command word as it appears on the wire.
WIRE_NAME: Final[dict[Op, bytes]] = {op: op.name.lower().encode() for op in Op}

GET_LIKE: Final = frozenset({Op.GET, Op.GETS, Op.GAT, Op.GATS})
STORAGE: Final = frozenset({Op.SET, Op.ADD, Op.REPLACE, Op.APPEND, Op.PREPEND, Op.CAS})
ARITHMETIC: Final = frozenset({Op.INCR, Op.DECR})
META: Final = frozenset({Op.MG, Op.MS, Op.MD, Op.MA, Op.MN, Op.ME})
#: Update-like operations get NOT_STORED as their default ("nothing happened") reply.
UPDATE_LIKE: Final = STORAGE | {Op.MS}
#: Where the exptime is in a request's `args`, per command that has one.
EXPTIME_ARG: Final[dict[Op, int]] = {
    **dict.fromkeys(STORAGE, 1),
    Op.TOUCH: 0,
    Op.GAT: 0,
    Op.GATS: 0,
}


class Result(enum.IntEnum):
    """Outcome classes, named after mcrouter's `mc_res_*` results."""

    FOUND = enum.auto()
    NOTFOUND = enum.auto()
    STORED = enum.auto()
    NOTSTORED = enum.auto()
    EXISTS = enum.auto()
    DELETED = enum.auto()
    TOUCHED = enum.auto()
    OK = enum.auto()
    TIMEOUT = enum.auto()
    CONNECT_ERROR = enum.auto()
    CONNECT_TIMEOUT = enum.auto()
    BUSY = enum.auto()
    TKO = enum.auto()
    REMOTE_ERROR = enum.auto()
    LOCAL_ERROR = enum.auto()
    CLIENT_ERROR = enum.auto()
    #: A bare `ERROR` line (unknown command as far as the server is concerned).
    ERROR = enum.auto()


# mcrouter's `resultSeverity` (higher is worse), used by AllSync-style "worst reply"
# logic. TOUCHED is deliberately left in mcrouter's catch-all bucket (10), which makes
# an AllSync touch that got TOUCHED and NOT_FOUND report TOUCHED, as mcrouter does.
_SEVERITY: Final[dict[Result, int]] = {
    Result.FOUND: 1,
    Result.STORED: 1,
    Result.EXISTS: 1,
    Result.DELETED: 1,
    Result.OK: 1,
    Result.NOTFOUND: 4,
    Result.NOTSTORED: 4,
    Result.TIMEOUT: 5,
    Result.CONNECT_ERROR: 5,
    Result.CONNECT_TIMEOUT: 5,
    Result.BUSY: 5,
    Result.TKO: 5,
    Result.REMOTE_ERROR: 7,
    Result.LOCAL_ERROR: 8,
    Result.CLIENT_ERROR: 9,
}


def severity(result: Result) -> int:
    return _SEVERITY.get(result, 10)


#: Errors after which FailoverRoute tries the next child (mcrouter `isFailoverErrorResult`).
FAILOVER_ERRORS: Final = frozenset(
    {
        Result.TIMEOUT,
        Result.CONNECT_ERROR,
        Result.CONNECT_TIMEOUT,
        Result.BUSY,
        Result.TKO,
        Result.REMOTE_ERROR,
        Result.LOCAL_ERROR,
    }
)
ERRORS: Final = FAILOVER_ERRORS | {Result.CLIENT_ERROR, Result.ERROR}
#: The results from this one on are the errors: `result >= FIRST_ERROR` is `result in
#: ERRORS` at the cost of an integer comparison (for per-reply counting).
FIRST_ERROR: Final = Result.TIMEOUT
#: Results that tell of a server the proxy could not reach (mcrouter's
#: `isTkoOrHardTkoResult`): FailoverRoute counts no try for them, spends no failover
#: token on them and marks the server's failure domain failed.
TKO_LIKE: Final = frozenset({Result.TKO, Result.CONNECT_ERROR, Result.CONNECT_TIMEOUT})
#: Results that count as a hit for warm-up and miss-failover logic.
HITS: Final = frozenset({Result.FOUND, Result.DELETED, Result.TOUCHED, Result.OK})


class _RequestFields(NamedTuple):
    op: Op
    key: bytes = b""
    keys: tuple[bytes, ...] | None = None
    args: tuple[bytes, ...] = ()
    data: bytes | None = None
    noreply: bool = False
    quiet_forwarded: bool = False
    wire: bytes | None = None


class Request(_RequestFields):
    """One client command: an immutable value, shared freely between sibling routes.

    `key` is the key as the client sent it (for multi-key retrievals, the first
    key); `keys` holds every key of a retrieval command. `args` are the validated
    tokens that follow the key on the wire (for `gat`/`gats` the exptime, which the
    wire puts before the keys, is in `args` too). `data` is the value block without
    its trailing CRLF. `noreply` means the client asked for silence (classic
    `noreply` or meta `q`); it is never forwarded, the proxy drops the answer.
    The exception is `quiet_forwarded` (`ma` with `q`): memcached's answer there
    depends on whether the item was created, which only the backend knows, so `q`
    goes to the backend and the destination follows the request with `mn`.

    `wire` is the request's bytes as the client sent them, when they are exactly
    what `to_wire` would give (set by `as_sent`, the parser's shortcut; it saves a
    re-render). A route that needs another key, exptime or argument makes a new
    request with `with_key`, `with_keys`, `with_exptime` or `replace`: none of them
    carries `wire` over, so a rewritten request is always rendered afresh. `wire`
    takes no part in equality.

    A tuple underneath: built in one C call and immutable, which an attrs frozen
    class is only at three times the cost per request.
    """

    __slots__ = ()

    @classmethod
    def as_sent(cls, op: Op, key: bytes, keys: tuple[bytes, ...] | None, wire: bytes) -> Request:
        """A request whose `wire` is the client's own bytes (the parser's shortcut)."""
        return _new_tuple(cls, (op, key, keys, (), None, False, False, wire))

    def replace(self, **changes: Any) -> Request:
        """A copy with `changes` applied, rendered afresh (without the client's bytes)."""
        return _RequestFields._replace(self, **changes, wire=None)

    def _replace(self, **changes: Any) -> Request:
        return self.replace(**changes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and self[:7] == other[:7]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:7])

    def with_key(self, key: bytes) -> Request:
        """The same request for another key (single-key commands)."""
        return Request(self.op, key, None, self.args, self.data, self.noreply, self.quiet_forwarded)

    def with_keys(self, keys: Sequence[bytes]) -> Request:
        """The same retrieval for another list of keys."""
        keys = tuple(keys)
        return Request(self.op, keys[0], keys, self.args, self.data, self.noreply)

    def with_exptime(self, exptime: bytes) -> Request:
        """The same command with another exptime (storage commands, touch, gat/gats)."""
        index = EXPTIME_ARG.get(self.op)
        if index is None:
            raise ValueError(f"{self.op.name.lower()} has no exptime")
        args = self.args
        if len(args) <= index:
            raise ValueError(f"{self.op.name.lower()} request has no exptime argument")
        new_args = (*args[:index], exptime, *args[index + 1 :])
        return Request(
            self.op, self.key, self.keys, new_args, self.data, self.noreply, self.quiet_forwarded
        )

    def to_wire(self) -> bytes:
        """The canonical bytes sent to a backend (never with noreply or meta `q`)."""
        if self.wire is not None:
            return self.wire
        op = self.op
        name = WIRE_NAME[op]
        if self.keys is not None:
            keys = b" ".join(self.keys)
            if op is Op.GAT or op is Op.GATS:
                return b"%s %s %s\r\n" % (name, self.args[0], keys)
            return b"%s %s\r\n" % (name, keys)
        if self.args:
            line = b"%s %s %s\r\n" % (name, self.key, b" ".join(self.args))
        elif self.key:
            line = b"%s %s\r\n" % (name, self.key)
        else:
            line = name + b"\r\n"
        if self.data is not None:
            return line + self.data + b"\r\n"
        return line


_new_tuple: Final = tuple.__new__


@attrs.define(slots=True, eq=False)
class Reply:
    """A complete reply: its classification and the exact bytes for the client."""

    result: Result
    raw: bytes

    @property
    def is_error(self) -> bool:
        return self.result in ERRORS


def error_reply(result: Result, message: str) -> Reply:
    """A proxy-generated error, rendered the way mcrouter renders it."""
    kind = "CLIENT_ERROR" if result is Result.CLIENT_ERROR else "SERVER_ERROR"
    return Reply(result, f"{kind} {message}\r\n".encode())


class Pending:
    """A reply that will arrive later: a minimal future driven by callbacks.

    Route handles return one of these synchronously; a destination's reader task
    resolves it when the backend's bytes arrive. Callbacks (not tasks) keep the
    per-request cost at a few function calls: no task spawn, no channel hop.

    `recover`, when set, sees the reply first and may replace it: it returns
    None to let the reply stand, or another Pending whose reply this one takes
    instead (failover tries the next child this way without a Pending of its own).
    It runs once; routing's combinators set it and guard it. While the replacement
    is awaited, any other `resolve` is ignored, as it is once a reply is known.
    """

    __slots__ = ("_callback", "_more", "recover", "reply")

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        # Almost every reply has exactly one listener: keep it without a list.
        self._callback: Callable[[Reply], None] | None = None
        self._more: list[Callable[[Reply], None]] | None = None
        self.recover: Callable[[Reply], Pending | None] | None = None

    def resolve(self, reply: Reply, *, recovered: bool = False) -> None:
        if self.reply is not None:
            return
        recover = self.recover
        if recover is not None and not recovered:
            if recover is _awaiting_replacement:
                return  # the reply comes from the Pending `recover` put in its place
            self.recover = _awaiting_replacement
            instead = recover(reply)
            if instead is not None:
                instead.then(partial(self.resolve, recovered=True))
                return
        self.reply = reply
        callback = self._callback
        if callback is not None:
            self._callback = None
            callback(reply)
            more = self._more
            if more:
                self._more = None
                for callback in more:
                    callback(reply)

    def then(self, callback: Callable[[Reply], None]) -> None:
        """Call `callback(reply)` once the reply is known (now, if it already is)."""
        if self.reply is not None:
            callback(self.reply)
        elif self._callback is None:
            self._callback = callback
        elif self._more is None:
            self._more = [callback]
        else:
            self._more.append(callback)


def _awaiting_replacement(reply: Reply) -> Pending | None:
    """`Pending.recover` while a recovered Pending waits for its replacement's reply."""
    raise AssertionError("a recovery ran twice")
