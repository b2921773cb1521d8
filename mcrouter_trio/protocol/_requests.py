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

import re
from collections.abc import Callable
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
#: `get <key>` with one key of at most 250 bytes, none of which the general path
#: treats specially (NUL ends a line; space and other white space split it).
_PLAIN_GET_PATTERN: Final = rb"get ([^\x00\t\n\x0b\x0c\r ]{1,250})"
_PLAIN_GET: Final = re.compile(_PLAIN_GET_PATTERN).fullmatch
#: The same request as a whole read, with its line ending.
_PLAIN_GET_READ: Final = re.compile(_PLAIN_GET_PATTERN + rb"\r?\n").fullmatch
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
    """A `set` or `ms` whose value exceeded the limit: answer `raw`, invalidate `key`.

    memcached unlinks the old item when a `set` (or an `ms`, in any mode) fails for
    size, so that a stale value does not outlive a write the client believes it
    made; the proxy does the same by routing a delete for the key.
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
#: memcached dispatches commands starting with these letters (and every two-letter
#: `m?` command) in their own branch, which answers ERROR to an unknown one; only
#: commands outside them reach the "looks like HTTP, close" check.
_BRANCH_LETTERS: Final = b"acdgist"
_META_TOO_MANY: Final = {
    Op.MG: b"CLIENT_ERROR options flags are too long\r\n",
    Op.MS: b"CLIENT_ERROR options flags too long\r\n",
    Op.MD: b"CLIENT_ERROR options flags too long\r\n",
    Op.MA: b"CLIENT_ERROR options flags too long\r\n",
}


@attrs.define
class _AwaitingData:
    """A storage command whose data block has not fully arrived yet.

    Its fields, not a `Request`: the request is made once, with its data.
    """

    op: Op
    key: bytes
    args: tuple[bytes, ...]
    noreply: bool
    length: int

    def request(self, data: bytes | None = None) -> Request:
        return Request(self.op, self.key, None, self.args, data, self.noreply)


@attrs.define
class _Swallowing:
    """Discarding a rejected data block, then answering with `event`."""

    remaining: int
    event: ImmediateReply | TooLargeSet | None


class RequestParser:
    """Incremental parser: `feed(bytes)`, then call `next_event()` until `NEED_DATA`."""

    __slots__ = (
        "_buf", "_closed", "_first_byte_seen", "_pos", "_scanned", "_state",
        "max_line_length", "max_value_size",
    )  # fmt: skip

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

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scanned -= self._pos
            self._pos = 0
        self._buf += data

    def take_plain_get(self, data: bytes) -> Request | None:
        """The request in `data` if it is one plain single-key `get` and nothing is buffered.

        Most reads hold exactly that. The result is what `feed(data)` and then
        `next_event()` would give; for any other input this returns None and
        consumes nothing, and the caller feeds `data` as usual.
        """
        if self._pos != len(self._buf) or self._state is not None or self._closed:
            return None
        plain = _PLAIN_GET_READ(data)
        if plain is None:
            return None
        self._first_byte_seen = True
        key = plain[1]
        if data[-2:] == b"\r\n":
            return Request.as_sent(Op.GET, key, (key,), data)
        return Request(Op.GET, key, (key,))

    def next_event(self) -> Event:
        if self._closed:
            return NEED_DATA
        state = self._state
        if state is not None:
            if isinstance(state, _AwaitingData):
                return self._read_data(state)
            return self._swallow(state)
        buf = self._buf
        start = self._pos
        if start >= len(buf):
            if start:
                # Everything read is consumed: free the buffer now rather than at the
                # next read, which an idle connection may not send for a long time.
                buf.clear()
                self._pos = self._scanned = 0
            return NEED_DATA
        if not self._first_byte_seen:
            self._first_byte_seen = True
            if buf[start] == 0x80:
                # The binary protocol is deprecated and no router speaks it.
                return self._close("binary protocol is not supported")
        scanned = self._scanned
        newline = buf.find(b"\n", scanned if scanned > start else start)
        if newline < 0:
            self._scanned = len(buf)
            return self._check_incomplete_line()
        end = newline - 1 if newline > start and buf[newline - 1] == 0x0D else newline
        line = bytes(buf[start:end])
        self._pos = self._scanned = newline + 1
        if newline - start > READ_BUFFER_SIZE and not _is_multiget(line):
            return self._close("command line too long")
        if line[:4] == b"get ":
            # The most common request by far: one plain key. Anything unusual (more
            # keys, odd bytes, a long key) takes the general path below.
            plain = _PLAIN_GET(line)
            if plain is not None:
                key = plain[1]
                return Request.as_sent(Op.GET, key, (key,), line + b"\r\n")
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
        if self._buf[start + state.length : start + need] != b"\r\n":
            return self._bad_chunk(state.request(), state.length)
        return state.request(bytes(self._buf[start : start + state.length]))

    def _bad_chunk(self, request: Request, length: int) -> Event:
        """Answer a data block not ended by CRLF: the backend never sees it.

        memcached rejects `ms` flags and items too large for it before it reads
        the data (then swallows the block unchecked), so those errors win over
        `bad data chunk`. Meta errors are shown even with `q`.
        """
        if request.op is not Op.MS:
            if self._item_too_large(request.key, request.args[0], length):
                raw = b"" if request.noreply else TOO_LARGE
                return (
                    TooLargeSet(request.key, raw) if request.op is Op.SET else ImmediateReply(raw)
                )
            return _reply(BAD_CHUNK, request.noreply)
        flags = list(request.args[1:])
        error = _ms_flag_error(request.key, flags)
        if error is not None:
            return ImmediateReply(error)
        key = request.key
        if any(flag[:1] == b"b" for flag in flags):
            key = _memcached_b64decode(key)
        client_flags = next((flag[1:] for flag in flags if flag[:1] == b"F"), b"0")
        if self._item_too_large(key, client_flags, length):
            return _ms_too_large(request.key, flags)
        return ImmediateReply(BAD_CHUNK)

    def _item_too_large(self, key: bytes, client_flags: bytes, length: int) -> bool:
        """memcached's `item_size_ok`, taking `max_value_size` as the backend's `-I`.

        An item is a 48-byte header, the key and a NUL, the cas, the client flags
        unless they are zero, and the value with its CRLF; both limits default to
        1 MiB. Only used where the backend cannot be asked.
        """
        flags = (strtoull(client_flags) or 0) & 0xFFFFFFFF
        size = 48 + len(key) + 1 + 8 + (4 if flags else 0) + length + 2
        return size > self.max_value_size

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
            op = Op.INCR if command == b"incr" else Op.DECR
            return _key_and_number(op, words, ntokens, strtoull, BAD_DELTA)
        if command == b"touch":
            return _key_and_number(Op.TOUCH, words, ntokens, strtol, BAD_EXPTIME)
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
        if command == b"cache_memlimit":
            return _cache_memlimit(words, ntokens)
        if (
            words[ntokens - 2].startswith(b"HTTP/")
            and command[0] not in _BRANCH_LETTERS
            and not (command[0] == 0x6D and len(command) == 2)  # `m?`
        ):
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
        return Request(op, keys[0], tuple(keys), args)

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
        args: tuple[bytes, ...] = (words[2], words[3], b"%d" % length)
        if is_cas:
            args += (words[5],)
        self._state = _AwaitingData(op, key, args, noreply, length)
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
        if noreply and op is Op.MA:
            # Whether memcached shows `ma`'s reply under q depends on whether the
            # item was created (N): let the backend decide (see Request).
            return Request(op, key, None, tuple(flags), None, False, True)
        if noreply:
            flags = [flag for flag in flags if flag[:1] != b"q"]
        args = tuple(flags)
        if op is Op.MS:
            if length > self.max_value_size:
                self._state = _Swallowing(length + 2, _ms_too_large(key, flags))
                return self.next_event()
            self._state = _AwaitingData(op, key, (words[2], *args), noreply, length)
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


def _key_and_number(
    op: Op,
    words: list[bytes],
    ntokens: int,
    number: Callable[[bytes], int | None],
    bad_number: bytes,
) -> Event:
    """incr/decr (a 64-bit delta) and touch (an exptime): `<cmd> <key> <n> [noreply]`."""
    if ntokens not in (4, 5):
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    key = words[1]
    if len(key) > KEY_MAX_LENGTH:
        return _reply(BAD_FORMAT, noreply)
    if number(words[2]) is None:
        return _reply(bad_number, noreply)
    return Request(op, key, None, (words[2],), None, noreply)


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


def _cache_memlimit(words: list[bytes], ntokens: int) -> Event:
    """memcached's replies, answered here: the proxy has no cache whose limit to set.

    Each memcached's memory limit is its own (`-m`, or `cache_memlimit` sent to it);
    a proxy that set every server's limit from one client command would surprise more
    than it helps, so it checks the command as memcached does and answers `OK`.
    """
    if ntokens not in (3, 4):
        return ImmediateReply(ERROR)
    noreply = words[ntokens - 2] == b"noreply"
    value = strtoull(words[1])
    if value is None:
        return _reply(ERROR, noreply)
    megabytes = value & 0xFFFFFFFF  # memcached reads it into a uint32_t
    if megabytes < 8:
        return _reply(b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n", noreply)
    if megabytes > 1_000_000_000:
        return _reply(b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n", noreply)
    return _reply(b"OK\r\n", noreply)


def _ms_too_large(key: bytes, flags: list[bytes]) -> ImmediateReply | TooLargeSet:
    """What memcached does with an `ms` whose value is over the limit.

    Flag errors are found first; otherwise the reply is `object too large` (even
    with `q`) and, in every mode, the existing item is unlinked. The proxy deletes
    it with a classic `delete`, so a base64 key whose real form cannot be written
    on a classic command line is left alone.
    """
    error = _ms_flag_error(key, flags)
    if error is not None:
        return ImmediateReply(error)
    if any(flag[:1] == b"b" for flag in flags):
        key = _memcached_b64decode(key)
        if not key or any(c in key for c in b" \n\0") or key.endswith(b"\r"):
            return ImmediateReply(TOO_LARGE)
    return TooLargeSet(key, TOO_LARGE)


_MS_BAD_TOKEN: Final = b"CLIENT_ERROR bad token in command line format\r\n"
_MS_NUMERIC_FLAGS: Final = {
    # flag letter: (parser of the rest of the token, error if it fails)
    0x4E: (strtol, _MS_BAD_TOKEN),  # N
    0x54: (strtol, _MS_BAD_TOKEN),  # T
    0x52: (strtol, _MS_BAD_TOKEN),  # R
    0x43: (strtoull, _MS_BAD_TOKEN),  # C
    0x4A: (strtoull, b"CLIENT_ERROR invalid numeric initial value\r\n"),  # J
    0x44: (strtoull, b"CLIENT_ERROR invalid numeric delta value\r\n"),  # D
}
#: Flags 1.6.18's `_meta_flag_preparse` accepts without looking at their token.
_MS_PLAIN_FLAGS: Final = frozenset(b"lOPLkstcfvhuqI")


def _ms_flag_error(key: bytes, flags: list[bytes] | tuple[bytes, ...]) -> bytes | None:
    """The error memcached 1.6.18 answers for an `ms` line's flags, or None if valid.

    Only needed when the backend cannot be asked (the proxy rejects the data block
    itself). Mirrors `_meta_flag_preparse` then `process_mset_command`: an unknown
    or repeated flag stops at once; other errors are remembered and parsing goes
    on, the last message winning (a bad `F` keeps the previous one, by default the
    generic format error); then over-long opaques, then the `M` mode.
    """
    error = BAD_FORMAT
    failed = False
    seen: set[int] = set()
    mode = 0
    for flag in flags:
        letter = flag[0]
        if letter >= 127 or letter in seen:
            return b"CLIENT_ERROR duplicate flag\r\n"
        seen.add(letter)
        numeric = _MS_NUMERIC_FLAGS.get(letter)
        if numeric is not None:
            parse, message = numeric
            if parse(flag[1:]) is None:
                error, failed = message, True
        elif letter == 0x62:  # b
            if not _memcached_b64decode(key):
                error, failed = b"CLIENT_ERROR error decoding key\r\n", True
        elif letter == 0x46:  # F
            failed = failed or strtoull(flag[1:]) is None
        elif letter == 0x4D:  # M
            if len(flag) != 2:
                error, failed = b"CLIENT_ERROR incorrect length for M token\r\n", True
            else:
                mode = flag[1]
        elif letter not in _MS_PLAIN_FLAGS:
            return b"CLIENT_ERROR invalid flag\r\n"
    if failed:
        return error
    if any(flag[:1] == b"O" and len(flag) > 32 for flag in flags):
        error, failed = b"CLIENT_ERROR opaque token too long\r\n", True
    if mode and mode not in b"EAPRS":
        return b"CLIENT_ERROR invalid mode for ms M token\r\n"
    return error if failed else None


_B64_VALUES: Final = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def _memcached_b64decode(data: bytes) -> bytes:
    """memcached's `base64_decode`: the decoded key, or b"" where memcached fails.

    More lenient than `base64.b64decode`: bytes outside the alphabet are skipped,
    decoding stops after the first padded group, and `=` counts as a zero digit
    (so "Zm9v!" is "foo"). Keys must decode the way the backend decodes them.
    """
    digits = [c for c in data if c in _B64_VALUES or c == 0x3D]
    if not digits or len(digits) % 4:
        return b""
    out = bytearray()
    for i in range(0, len(digits), 4):
        group = digits[i : i + 4]
        pad = group.count(0x3D)
        a, b, c, d = (_B64_VALUES.get(x, 0) for x in group)
        out += bytes(((a << 2 | b >> 4) & 0xFF, (b << 4 | c >> 2) & 0xFF, (c << 6 | d) & 0xFF))
        if pad:
            if pad > 2:
                return b""
            del out[-pad:]
            break
    return bytes(out)


def meta_routing_key(request: Request) -> bytes:
    """The key to hash for a meta request: base64-decoded when the `b` flag is set.

    Decoded as memcached decodes it, so that a key routes to the same server in
    either form; a key memcached cannot decode is hashed as sent.
    """
    if any(flag[:1] == b"b" for flag in request.args):
        return _memcached_b64decode(request.key) or request.key
    return request.key
