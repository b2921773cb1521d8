"""Backend-side reply framing: find where one reply ends and classify it.

Replies on a pipelined connection are matched to requests strictly in order, so
the framer is told which command the next reply answers and refuses anything that
cannot be an answer to it. A refused reply means the stream is out of sync (a
garbage-sending or confused server); the caller must close the connection and fail
every request still waiting on it, because a reply must never reach the wrong
request.

Get-like replies keep the exact bytes from the server; `values()` walks the VALUE
blocks of such a reply when a route needs them (multi-get merging, warm-up).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from mcrouter_trio.counters import ProxyCounters, count_result
from mcrouter_trio.messages import ARITHMETIC, GET_LIKE, Op, Reply, Result

#: The longest reply line accepted before the stream is declared broken.
MAX_REPLY_LINE: Final = 64 * 1024
#: A value length beyond this cannot come from memcached (its -I maximum is 1 GiB).
MAX_REPLY_VALUE: Final = 1 << 30


class ReplyStreamError(Exception):
    """The backend sent something that is not a valid reply to the pending request."""


_ERROR_PREFIXES: Final = (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")
#: The VALUE line of a get reply, in the shape memcached writes it; group 1 is the
#: size. Lines of other shapes take the general path in `_frame_get`.
_VALUE_LINE: Final = re.compile(rb"VALUE [^ \r\n]+ [^ \r\n]+ (\d{1,10})(?: [^ \r\n]+)?\r\n").match

#: The same, with the key as group 1 and the size as group 2.
_VALUE_HEADER: Final = re.compile(
    rb"VALUE ([^ \r\n]+) [^ \r\n]+ (\d{1,10})(?: [^ \r\n]+)?\r\n"
).match
#: A miss, as memcached answers a single-key get for a key it does not have.
MISS: Final = Reply(Result.NOTFOUND, b"END\r\n")

_SIMPLE: Final[dict[bytes, Result]] = {
    b"STORED": Result.STORED,
    b"NOT_STORED": Result.NOTSTORED,
    b"EXISTS": Result.EXISTS,
    b"NOT_FOUND": Result.NOTFOUND,
    b"DELETED": Result.DELETED,
    b"TOUCHED": Result.TOUCHED,
    b"OK": Result.OK,
}

_ALLOWED: Final[dict[Op, frozenset[bytes]]] = {
    Op.SET: frozenset({b"STORED", b"NOT_STORED"}),
    Op.ADD: frozenset({b"STORED", b"NOT_STORED"}),
    Op.REPLACE: frozenset({b"STORED", b"NOT_STORED"}),
    Op.APPEND: frozenset({b"STORED", b"NOT_STORED"}),
    Op.PREPEND: frozenset({b"STORED", b"NOT_STORED"}),
    Op.CAS: frozenset({b"STORED", b"EXISTS", b"NOT_FOUND"}),
    Op.DELETE: frozenset({b"DELETED", b"NOT_FOUND"}),
    Op.TOUCH: frozenset({b"TOUCHED", b"NOT_FOUND"}),
    Op.INCR: frozenset({b"NOT_FOUND"}),
    Op.DECR: frozenset({b"NOT_FOUND"}),
    Op.FLUSH_ALL: frozenset({b"OK"}),
    Op.VERBOSITY: frozenset({b"OK"}),
}

_META_CODES: Final[dict[Op, dict[bytes, Result]]] = {
    Op.MG: {b"HD": Result.FOUND, b"VA": Result.FOUND, b"EN": Result.NOTFOUND},
    Op.MS: {
        b"HD": Result.STORED,
        b"NS": Result.NOTSTORED,
        b"EX": Result.EXISTS,
        b"NF": Result.NOTFOUND,
    },
    Op.MD: {b"HD": Result.DELETED, b"NF": Result.NOTFOUND, b"EX": Result.EXISTS},
    Op.MA: {
        b"HD": Result.FOUND,
        b"VA": Result.FOUND,
        b"NF": Result.NOTFOUND,
        b"NS": Result.NOTSTORED,
        b"EX": Result.EXISTS,
    },
    Op.ME: {b"ME": Result.FOUND, b"EN": Result.NOTFOUND},
}


class GetProgress:
    """How far a get reply still arriving has been framed, so the next read resumes there.

    A multi-get reply of megabytes arrives in dozens of reads; walking its VALUE
    blocks from the start after each one would cost time quadratic in its size.
    Offsets are relative to the reply's start, which moves when the caller compacts
    its buffer. One per connection: replies are framed one at a time, in order.

    `results`, if given, counts the error lines framed in the `result_*` stats: the
    framer tells them apart anyway, so a success costs nothing more.
    """

    __slots__ = ("framed", "hits", "results")

    def __init__(self, results: ProxyCounters | None = None) -> None:
        self.framed = 0  # bytes of whole VALUE blocks already walked
        self.hits = 0
        self.results = results

    def reset(self) -> None:
        self.framed = self.hits = 0


def frame_reply(
    buf: bytes | bytearray, start: int, op: Op, progress: GetProgress | None = None
) -> tuple[Reply, int] | None:
    """Frame the reply to `op` that starts at `buf[start]`.

    Returns the reply and the index just past it, or None if more bytes are needed.
    Raises ReplyStreamError if the bytes cannot be a reply to `op`. A caller that
    frames a stream passes its `GetProgress`, so that a long get reply is walked once.
    """
    if op in GET_LIKE:
        if progress is not None and progress.framed:
            return _frame_get(buf, start, progress)
        value = _VALUE_LINE(buf, start)
        if value is not None:
            # The commonest reply, one hit, without the general loop in `_frame_get`.
            data_end = value.end() + int(value[1])
            if buf[data_end : data_end + 7] == b"\r\nEND\r\n":
                return Reply(Result.FOUND, bytes(buf[start : data_end + 7])), data_end + 7
    end = buf.find(b"\r\n", start)
    if end < 0:
        if len(buf) - start > MAX_REPLY_LINE:
            raise ReplyStreamError("reply line too long")
        return None
    if op in GET_LIKE:
        return _frame_get(buf, start, progress)
    if op is Op.MA_QUIET:
        return _frame_quiet_ma(buf, start, end, progress)
    line = bytes(buf[start:end])
    after = end + 2
    if line.startswith(_ERROR_PREFIXES):
        return _error(line, after, progress)
    meta = _META_CODES.get(op)
    if meta is not None:
        return _frame_meta(buf, start, line, after, meta)
    allowed = _ALLOWED.get(op)
    if allowed is not None and line in allowed:
        return Reply(_SIMPLE[line], bytes(buf[start:after])), after
    if op in ARITHMETIC and line.isdigit():
        return Reply(Result.FOUND, bytes(buf[start:after])), after
    if op is Op.VERSION and line.startswith(b"VERSION "):
        return Reply(Result.OK, bytes(buf[start:after])), after
    raise ReplyStreamError(f"unexpected reply {line[:80]!r} to {op.name.lower()}")


def _frame_quiet_ma(
    buf: bytes | bytearray, start: int, end: int, progress: GetProgress | None
) -> tuple[Reply, int] | None:
    """`ma ... q` then `mn`: MN alone means the reply was suppressed (a success)."""
    if buf[start:end] == b"MN":
        return Reply(Result.FOUND, b""), end + 2
    framed = frame_reply(buf, start, Op.MA)  # counted below, once the MN is here too
    if framed is None:
        return None
    reply, after = framed
    if len(buf) < after + 4:
        if buf[after:] != b"MN\r\n"[: len(buf) - after]:
            raise ReplyStreamError("no MN after a quiet ma reply")
        return None
    if buf[after : after + 4] != b"MN\r\n":
        raise ReplyStreamError("no MN after a quiet ma reply")
    if progress is not None and progress.results is not None and reply.is_error:
        count_result(progress.results, reply.result)
    return reply, after + 4


def _error(line: bytes, after: int, progress: GetProgress | None = None) -> tuple[Reply, int]:
    if line.startswith(b"SERVER_ERROR"):
        result = Result.REMOTE_ERROR
    elif line.startswith(b"CLIENT_ERROR"):
        result = Result.CLIENT_ERROR
    else:
        result = Result.ERROR
    if progress is not None and progress.results is not None:
        count_result(progress.results, result)
    return Reply(result, line + b"\r\n"), after


def _frame_get(
    buf: bytes | bytearray, start: int, progress: GetProgress | None
) -> tuple[Reply, int] | None:
    if progress is None:
        hits = 0
        line_start = start
    else:
        hits = progress.hits
        line_start = start + progress.framed
        progress.reset()  # set again below if the reply is still incomplete
    while True:
        value = _VALUE_LINE(buf, line_start)
        if value is not None:
            # The usual VALUE line: one regular expression, and the block is skipped
            # here rather than in `_block_end` (this loop runs once per key of a multi-get).
            size = int(value[1])
            if size > MAX_REPLY_VALUE:
                raise ReplyStreamError("VALUE size out of range")
            data_end = value.end() + size
            if len(buf) < data_end + 2:
                _remember(progress, line_start - start, hits)
                return None
            if not buf.startswith(b"\r\n", data_end):
                raise ReplyStreamError("VALUE block not terminated by CRLF")
            hits += 1
            line_start = data_end + 2
            continue
        if buf.startswith(b"END\r\n", line_start):
            result = Result.FOUND if hits else Result.NOTFOUND
            return Reply(result, bytes(buf[start : line_start + 5])), line_start + 5
        end = buf.find(b"\r\n", line_start)
        if end < 0:
            if len(buf) - line_start > MAX_REPLY_LINE:
                raise ReplyStreamError("reply line too long")
            _remember(progress, line_start - start, hits)
            return None
        if buf.startswith(b"VALUE ", line_start):
            # A VALUE line of another shape than memcached's.
            block_end = _block_end(buf, end + 2, _value_size(bytes(buf[line_start:end])))
            if block_end is None:
                _remember(progress, line_start - start, hits)
                return None
            hits += 1
            line_start = block_end
            continue
        line = bytes(buf[line_start:end])
        if hits == 0 and line.startswith(_ERROR_PREFIXES):
            return _error(line, end + 2, progress)
        if hits and line.startswith(b"SERVER_ERROR"):
            # memcached can fail part-way through a multi-get (out of memory); the
            # error line then ends the reply.
            if progress is not None and progress.results is not None:
                count_result(progress.results, Result.REMOTE_ERROR)
            return Reply(Result.REMOTE_ERROR, bytes(buf[start : end + 2])), end + 2
        raise ReplyStreamError(f"unexpected reply {line[:80]!r} to a get")


def _remember(progress: GetProgress | None, framed: int, hits: int) -> None:
    """Remember how far an incomplete get reply was walked, for the next call."""
    if progress is not None:
        progress.framed = framed
        progress.hits = hits


def _value_size(line: bytes) -> int:
    parts = line.split(b" ")
    if len(parts) not in (4, 5) or not parts[3].isdigit():
        raise ReplyStreamError(f"malformed VALUE line {line[:80]!r}")
    return int(parts[3])


def _block_end(buf: bytes | bytearray, data_start: int, size: int) -> int | None:
    """The index past a VALUE block whose `size` data bytes start at `data_start`.

    None if more bytes are needed; ReplyStreamError if it cannot be a VALUE block.
    """
    if size > MAX_REPLY_VALUE:
        raise ReplyStreamError("VALUE size out of range")
    data_end = data_start + size
    if len(buf) < data_end + 2:
        return None
    if buf[data_end : data_end + 2] != b"\r\n":
        raise ReplyStreamError("VALUE block not terminated by CRLF")
    return data_end + 2


def _frame_meta(
    buf: bytes | bytearray, start: int, line: bytes, after: int, codes: dict[bytes, Result]
) -> tuple[Reply, int] | None:
    code = line[:2]
    result = codes.get(code)
    if result is None or (len(line) > 2 and line[2] != 0x20):
        raise ReplyStreamError(f"unexpected meta reply {line[:80]!r}")
    if code != b"VA":
        return Reply(result, bytes(buf[start:after])), after
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ReplyStreamError(f"malformed VA line {line[:80]!r}")
    data_end = after + int(parts[1])
    if len(buf) < data_end + 2:
        return None
    if buf[data_end : data_end + 2] != b"\r\n":
        raise ReplyStreamError("VA block not terminated by CRLF")
    return Reply(result, bytes(buf[start : data_end + 2])), data_end + 2


def values(raw: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Yield (key, header-line, whole VALUE block incl. data and CRLF) of a get reply."""
    pos = 0
    while raw.startswith(b"VALUE ", pos):
        end = raw.index(b"\r\n", pos)
        header = raw[pos:end]
        size = int(header.split(b" ")[3])
        block_end = end + 2 + size + 2
        yield header.split(b" ", 2)[1], header, raw[pos:block_end]
        pos = block_end


class GetBatchFramer:
    """Frames the reply to one `get k1 ... kn` into the replies each `get ki` would get.

    memcached answers the keys of a multi-key get in order and leaves misses out,
    so walking the VALUE blocks against the keys tells each key's hit or miss. An
    error line that ends the reply (`SERVER_ERROR` part-way, or any error before the
    first hit) answers every key not answered yet. Framing resumes where it stopped:
    a long reply that arrives in many reads is not walked again from its start.
    """

    __slots__ = ("_framed", "keys", "replies", "results")

    def __init__(self, keys: list[bytes], results: ProxyCounters | None = None) -> None:
        self.keys = keys
        #: Where the keys an error line answers are counted (`result_*`), if anywhere.
        self.results = results
        #: One reply per key, in key order, once `frame` returned an index.
        self.replies: list[Reply] = []
        self._framed = 0  # bytes of the reply already framed into `replies`

    def frame(self, buf: bytes | bytearray, start: int) -> int | None:
        """The index just past the reply that starts at `buf[start]`; None: need more.

        Raises ReplyStreamError if the bytes cannot be the reply to this get.
        """
        keys = self.keys
        replies = self.replies
        pos = start + self._framed
        while True:
            value = _VALUE_HEADER(buf, pos)
            if value is not None:
                key = value[1]
                block_end = _block_end(buf, value.end(), int(value[2]))
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_REPLY_LINE:
                        raise ReplyStreamError("reply line too long")
                    return None
                if end - pos == 3 and buf.startswith(b"END", pos):
                    replies.extend([MISS] * (len(keys) - len(replies)))
                    return end + 2
                line = bytes(buf[pos:end])
                if not line.startswith(b"VALUE "):
                    return self._error(line, end + 2)
                size = _value_size(line)  # an unusual VALUE line, checked
                key = line.split(b" ")[1]
                block_end = _block_end(buf, end + 2, size)
            if block_end is None:
                return None
            index = len(replies)
            while index < len(keys) and keys[index] != key:
                replies.append(MISS)  # memcached skipped it: a miss
                index += 1
            if index == len(keys):
                raise ReplyStreamError(f"VALUE for a key not asked for: {key[:80]!r}")
            replies.append(Reply(Result.FOUND, bytes(buf[pos:block_end]) + b"END\r\n"))
            pos = block_end
            self._framed = pos - start

    def _error(self, line: bytes, after: int) -> int:
        if not line.startswith(_ERROR_PREFIXES) or (
            self.replies and not line.startswith(b"SERVER_ERROR")
        ):
            raise ReplyStreamError(f"unexpected reply {line[:80]!r} to a get")
        error = _error(line, after)[0]
        answered = len(self.keys) - len(self.replies)
        if self.results is not None:
            count_result(self.results, error.result, answered)
        self.replies.extend([error] * answered)
        return after
