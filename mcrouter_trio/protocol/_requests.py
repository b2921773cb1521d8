"""Client-side parser for the memcached text and meta protocols (bytes in, events out).

The parser mirrors memcached 1.6.18's `process_command_ascii` so that every input
is framed and answered the way memcached would: the same word-count checks (done
before `noreply` is looked at), the same error strings, the same decision about
whether a rejected storage command's data block is consumed or parsed as the next
command. Anything the proxy can answer without a backend (malformed input, limits)
comes out as an `ImmediateReply`; everything else as a validated `Request`.

Limits are enforced as bytes arrive: a command line without a newline is dropped
(connection closed, as memcached does) once 2048 bytes are buffered unless it is a
`get`/`gets` line, multi-get lines are capped by `max_line_length`, and a value
larger than `max_value_size` is swallowed without ever being buffered whole.

Buffering is linear: one `bytearray`, a consumed-up-to index and a searched-up-to
index, so a slowly arriving line is never rescanned from its start.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import attrs

from mcrouter_trio.messages import Op, Request
from mcrouter_trio.protocol._numbers import strtol, strtoull

KEY_MAX_LENGTH: Final = 250
#: memcached closes a connection whose buffered line exceeds this without a newline.
INCOMPLETE_LINE_LIMIT: Final = 2048
#: memcached's read buffer: a complete non-get line longer than this can never fit.
READ_BUFFER_SIZE: Final = 16384
DEFAULT_MAX_VALUE_SIZE: Final = 1024 * 1024
DEFAULT_MAX_LINE_LENGTH: Final = 1024 * 1024
_MAX_TOKENS: Final = 24
_INT_MAX: Final = (1 << 31) - 1

BAD_FORMAT: Final = b"CLIENT_ERROR bad command line format\r\n"
ERROR: Final = b"ERROR\r\n"
TOO_LARGE: Final = b"SERVER_ERROR object too large for cache\r\n"
BAD_CHUNK: Final = b"CLIENT_ERROR bad data chunk\r\n"
BAD_EXPTIME: Final = b"CLIENT_ERROR invalid exptime argument\r\n"
BAD_DELTA: Final = b"CLIENT_ERROR invalid numeric delta argument\r\n"
DELETE_USAGE: Final = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"


@attrs.frozen
class ImmediateReply:
    """Bytes the proxy answers by itself, at this request's place in the reply order."""

    raw: bytes


@attrs.frozen
class CloseConnection:
    """memcached would close the connection here; `raw` is written first, if any."""

    reason: str
    raw: bytes = b""


@attrs.frozen
class TooLargeSet:
    """A `set` whose value exceeded the limit: answer `raw` and invalidate `key`.

    memcached unlinks the old item when a `set` fails for size, so that a stale
    value does not outlive a write the client believes it made; the proxy does the
    same by routing a delete for the key.
    """

    key: bytes
    raw: bytes


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

Event = Request | ImmediateReply | CloseConnection | TooLargeSet | _NeedData

_STORAGE_OPS: Final = {
    b"set": Op.SET,
    b"add": Op.ADD,
    b"replace": Op.REPLACE,
    b"append": Op.APPEND,
    b"prepend": Op.PREPEND,
    b"cas": Op.CAS,
}
_RETRIEVAL_OPS: Final = {
    b"get": Op.GET,
    b"bget": Op.GET,
    b"gets": Op.GETS,
    b"gat": Op.GAT,
    b"gats": Op.GATS,
}
_META_OPS: Final = {b"mg": Op.MG, b"ms": Op.MS, b"md": Op.MD, b"ma": Op.MA, b"me": Op.ME}
_META_TOO_MANY: Final = {
    Op.MG: b"CLIENT_ERROR options flags are too long\r\n",
    Op.MS: b"CLIENT_ERROR options flags too long\r\n",
    Op.MD: b"CLIENT_ERROR options flags too long\r\n",
    Op.MA: b"CLIENT_ERROR options flags too long\r\n",
}


@attrs.define
class _AwaitingData:
    """A storage command whose data block has not fully arrived yet."""

    request: Request
    length: int


@attrs.define
class _Swallowing:
    """Discarding a rejected data block, then answering with `event`."""

    remaining: int
    event: ImmediateReply | TooLargeSet | None


class RequestParser:
    """Incremental parser: `feed(bytes)`, then call `next_event()` until `NEED_DATA`."""

    def __init__(
        self,
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    ) -> None:
        self.max_value_size = max_value_size
        self.max_line_length = max_line_length
        self._buf = bytearray()
        self._pos = 0  # first unconsumed byte
        self._scanned = 0  # no newline before this index (from _pos)
        self._state: _AwaitingData | _Swallowing | None = None
        self._first_byte_seen = False
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed by an event."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scanned -= self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event:
        if self._closed:
            return NEED_DATA
        state = self._state
        if state is not None:
            if isinstance(state, _AwaitingData):
                return self._read_data(state)
            return self._swallow(state)
        buf = self._buf
        if not self._first_byte_seen and len(buf) > self._pos:
            self._first_byte_seen = True
            if buf[self._pos] == 0x80:
                # The binary protocol is deprecated and no router speaks it.
                return self._close("binary protocol is not supported")
        newline = buf.find(b"\n", max(self._scanned, self._pos))
        if newline < 0:
            self._scanned = len(buf)
            return self._check_incomplete_line()
        start = self._pos
        end = newline - 1 if newline > start and buf[newline - 1] == 0x0D else newline
        line = bytes(buf[start:end])
        self._pos = self._scanned = newline + 1
        if newline - start > READ_BUFFER_SIZE and not _is_multiget(line):
            return self._close("command line too long")
        return self._parse_line(line)

    # -- framing ---------------------------------------------------------------

    def _check_incomplete_line(self) -> Event:
        pending = len(self._buf) - self._pos
        if pending > INCOMPLETE_LINE_LIMIT:
            head = bytes(self._buf[self._pos : self._pos + 128])
            if not _is_multiget(head):
                return self._close("command line too long")
            if pending > self.max_line_length:
                return self._close("request too long", b"CLIENT_ERROR request too long\r\n")
        return NEED_DATA

    def _read_data(self, state: _AwaitingData) -> Event:
        need = state.length + 2
        start = self._pos
        if len(self._buf) - start < need:
            return NEED_DATA
        self._state = None
        self._pos = self._scanned = start + need
        request = state.request
        if self._buf[start + state.length : start + need] != b"\r\n":
            return _reply(BAD_CHUNK, request.noreply)
        request.data = bytes(self._buf[start : start + state.length])
        return request

    def _swallow(self, state: _Swallowing) -> Event:
        available = len(self._buf) - self._pos
        taken = min(available, state.remaining)
        self._pos += taken
        self._scanned = self._pos
        state.remaining -= taken
        if state.remaining:
            # Do not keep a huge rejected value in memory while it streams in.
            del self._buf[: self._pos]
            self._pos = self._scanned = 0
            return NEED_DATA
        self._state = None
        return state.event if state.event is not None else ImmediateReply(b"")

    def _close(self, reason: str, raw: bytes = b"") -> CloseConnection:
        self._closed = True
        return CloseConnection(reason, raw)

    # -- commands --------------------------------------------------------------

    def _parse_line(self, line: bytes) -> Event:
        if b"\0" in line:
            # memcached tokenises with strlen(): a NUL ends the command line.
            line = line[: line.index(b"\0")]
        words = line.split()
        if b"\t" in line or b"\x0b" in line or b"\x0c" in line or b"\r" in line:
            # bytes.split() also splits on other white space; memcached only on ' '.
            words = [w for w in line.split(b" ") if w]
        # memcached's token count: at most 23 words plus the terminator.
        ntokens = min(len(words), _MAX_TOKENS - 1) + 1
        if ntokens < 2 or len(words[0]) < 2:
            return ImmediateReply(ERROR)
        command = words[0]
        op = _RETRIEVAL_OPS.get(command)
        if op is not None:
            return self._retrieval(op, words, ntokens)
        op = _STORAGE_OPS.get(command)
        if op is not None:
            return self._storage(op, words, ntokens)
        op = _META_OPS.get(command)
        if op is not None:
            return self._meta(op, words, ntokens, line)
        if command == b"delete":
            return _delete(words, ntokens)
        if command == b"incr" or command == b"decr":
            return _arithmetic(Op.INCR if command == b"incr" else Op.DECR, words, ntokens)
        if command == b"touch":
            return _touch(words, ntokens)
        if command == b"mn":
            return ImmediateReply(b"MN\r\n")
        if command == b"version":
            return Request(Op.VERSION)
        if command == b"quit":
            return Request(Op.QUIT)
        if command == b"stats":
            return Request(Op.STATS, args=tuple(words[1:]))
        if command == b"flush_all":
            return _flush_all(words, ntokens)
        if command == b"verbosity":
            return _verbosity(words, ntokens)
        if command == b"shutdown":
            return ImmediateReply(b"ERROR: shutdown not enabled\r\n")
        if words[ntokens - 2].startswith(b"HTTP/"):
            # memcached drops connections that look like HTTP requests.
            return self._close("HTTP request on the memcached port")
        return ImmediateReply(ERROR)

    def _retrieval(self, op: Op, words: list[bytes], ntokens: int) -> Event:
        if ntokens < 3:
            return ImmediateReply(ERROR)
        args: tuple[bytes, ...] = ()
        keys = words[1:]
        if op is Op.GAT or op is Op.GATS:
            if strtol(words[1]) is None:
                return ImmediateReply(BAD_EXPTIME)
            args = (words[1],)
            keys = words[2:]
            if not keys:
                return ImmediateReply(b"END\r\n")
        for key in keys:
            if len(key) > KEY_MAX_LENGTH:
                return ImmediateReply(BAD_FORMAT)
        return Request(op, keys[0], keys, args)

    def _storage(self, op: Op, words: list[bytes], ntokens: int) -> Event:
        is_cas = op is Op.CAS
        if ntokens not in ((7, 8) if is_cas else (6, 7)):
            return ImmediateReply(ERROR)
        noreply = words[ntokens - 2] == b"noreply"
        key = words[1]
        if len(key) > KEY_MAX_LENGTH:
            return _reply(BAD_FORMAT, noreply)
        length = strtol(words[4])
        if (
            strtoull(words[2]) is None
            or strtol(words[3]) is None
            or length is None
            or (is_cas and strtoull(words[5]) is None)
            or length < 0
            or length > _INT_MAX - 2
        ):
            return _reply(BAD_FORMAT, noreply)
        if length > self.max_value_size:
            event: ImmediateReply | TooLargeSet | None
            raw = b"" if noreply else TOO_LARGE
            event = TooLargeSet(key, raw) if op is Op.SET else ImmediateReply(raw)
            self._state = _Swallowing(length + 2, event)
            return self.next_event()
        args = (words[2], words[3], b"%d" % length)
        if is_cas:
            args += (words[5],)
        request = Request(op, key, None, args, None, noreply)
        self._state = _AwaitingData(request, length)
        return self.next_event()

    def _meta(self, op: Op, words: list[bytes], ntokens: int, line: bytes) -> Event:
        if ntokens < 3:
            return ImmediateReply(BAD_FORMAT if op is Op.ME else ERROR)
        key = words[1]
        if len(key) > KEY_MAX_LENGTH:
            return ImmediateReply(BAD_FORMAT)
        if op is Op.ME:
            return Request(op, key, None, tuple(words[2:]))
        flags_start = 2
        length = 0
        if op is Op.MS:
            if ntokens == 3:
                return ImmediateReply(BAD_FORMAT)
            flags_start = 3
        if ntokens > 20:
            # Not forwarded: without its data block consumed the backend would
            # answer twice, and stripping `q` could hide the error.
            return ImmediateReply(_META_TOO_MANY[op])
        if op is Op.MS:
            parsed = strtol(words[2])
            if parsed is None or parsed < 0 or parsed > _INT_MAX - 2:
                return ImmediateReply(BAD_FORMAT)
            length = parsed
        flags = words[flags_start:]
        # Any token starting with 'q' is the quiet flag. It is stripped so that the
        # backend always answers (a missing answer would shift every later reply);
        # the session drops the boring answers itself. Two of them are a duplicate
        # flag: forwarded untouched, the backend then always answers with an error.
        quiet_flags = [flag for flag in flags if flag[:1] == b"q"]
        noreply = len(quiet_flags) == 1
        if noreply:
            flags = [flag for flag in flags if flag[:1] != b"q"]
        args = tuple(flags)
        if op is Op.MS:
            if length > self.max_value_size:
                self._state = _Swallowing(length + 2, ImmediateReply(TOO_LARGE))
                return self.next_event()
            request = Request(op, key, None, (words[2], *args), None, noreply)
            self._state = _AwaitingData(request, length)
            return self.next_event()
        return Request(op, key, None, args, None, noreply)


def _is_multiget(head: bytes) -> bool:
    stripped = head.lstrip(b" ")
    return len(head) - len(stripped) <= 100 and stripped.startswith((b"get ", b"gets "))


def _reply(raw: bytes, noreply: bool) -> ImmediateReply:
    return ImmediateReply(b"" if noreply else raw)


def _delete(words: list[bytes], ntokens: int) -> Event:
    if not 3 <= ntokens <= 5:
        return ImmediateReply(ERROR)
    noreply = False
    if ntokens > 3:
        # memcached still accepts the historical `delete <key> 0 [noreply]` form.
        hold_is_zero = words[2] == b"0"
        noreply = words[ntokens - 2] == b"noreply"
        valid = (ntokens == 4 and (hold_is_zero or noreply)) or (
            ntokens == 5 and hold_is_zero and noreply
        )
        if not valid:
            return _reply(DELETE_USAGE, noreply)
    key = words[1]
    if len(key) > KEY_MAX_LENGTH:
        return _reply(BAD_FORMAT, noreply)
    return Request(Op.DELETE, key, None, (), None, noreply)


def _arithmetic(op: Op, words: list[bytes], ntokens: int) -> Event:
    if ntokens not in (4, 5):
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    key = words[1]
    if len(key) > KEY_MAX_LENGTH:
        return _reply(BAD_FORMAT, noreply)
    if strtoull(words[2]) is None:
        return _reply(BAD_DELTA, noreply)
    return Request(op, key, None, (words[2],), None, noreply)


def _touch(words: list[bytes], ntokens: int) -> Event:
    if ntokens not in (4, 5):
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    key = words[1]
    if len(key) > KEY_MAX_LENGTH:
        return _reply(BAD_FORMAT, noreply)
    if strtol(words[2]) is None:
        return _reply(BAD_EXPTIME, noreply)
    return Request(Op.TOUCH, key, None, (words[2],), None, noreply)


def _flush_all(words: list[bytes], ntokens: int) -> Event:
    if not 2 <= ntokens <= 4:
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    args: tuple[bytes, ...] = ()
    if ntokens != (3 if noreply else 2):
        args = (words[1],)
    return Request(Op.FLUSH_ALL, b"", None, args, None, noreply)


def _verbosity(words: list[bytes], ntokens: int) -> Event:
    if ntokens not in (3, 4):
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    if strtoull(words[1]) is None:
        return _reply(BAD_FORMAT, noreply)
    return Request(Op.VERBOSITY, b"", None, (words[1],), None, noreply)


def meta_routing_key(request: Request) -> bytes:
    """The key to hash for a meta request: base64-decoded when the `b` flag is set."""
    if b"b" in request.args:
        try:
            return base64.b64decode(request.key, validate=True)
        except (binascii.Error, ValueError):
            return request.key
    return request.key
