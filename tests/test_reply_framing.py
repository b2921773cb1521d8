"""Tests of `frame_reply`: where one backend reply ends, and what cannot be a reply.

Each complete reply is also fed as every one of its proper prefixes, which must
all ask for more bytes (a reply is never framed early, however the stream is cut).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from mcrouter_trio.messages import Op, Reply, Result
from mcrouter_trio.protocol import (
    GetBatchFramer,
    GetProgress,
    ReplyStreamError,
    frame_reply,
    values,
)
from mcrouter_trio.protocol._replies import MAX_REPLY_LINE, _frame_get


@attrs.frozen
class Complete:
    id: str
    op: Op
    raw: bytes
    result: Result


OK = Complete
COMPLETE: list[Complete] = [
    # storage
    OK("set-stored", Op.SET, b"STORED\r\n", Result.STORED),
    OK("add-not-stored", Op.ADD, b"NOT_STORED\r\n", Result.NOTSTORED),
    OK("replace-not-stored", Op.REPLACE, b"NOT_STORED\r\n", Result.NOTSTORED),
    OK("append-stored", Op.APPEND, b"STORED\r\n", Result.STORED),
    OK("prepend-stored", Op.PREPEND, b"STORED\r\n", Result.STORED),
    OK("cas-stored", Op.CAS, b"STORED\r\n", Result.STORED),
    OK("cas-exists", Op.CAS, b"EXISTS\r\n", Result.EXISTS),
    OK("cas-not-found", Op.CAS, b"NOT_FOUND\r\n", Result.NOTFOUND),
    OK(
        "set-too-large", Op.SET, b"SERVER_ERROR object too large for cache\r\n", Result.REMOTE_ERROR
    ),
    OK("set-bad-chunk", Op.SET, b"CLIENT_ERROR bad data chunk\r\n", Result.CLIENT_ERROR),
    OK("set-error", Op.SET, b"ERROR\r\n", Result.ERROR),
    # delete, touch, arithmetic, admin
    OK("delete-deleted", Op.DELETE, b"DELETED\r\n", Result.DELETED),
    OK("delete-not-found", Op.DELETE, b"NOT_FOUND\r\n", Result.NOTFOUND),
    OK(
        "delete-usage",
        Op.DELETE,
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        Result.CLIENT_ERROR,
    ),
    OK("touch-touched", Op.TOUCH, b"TOUCHED\r\n", Result.TOUCHED),
    OK("touch-not-found", Op.TOUCH, b"NOT_FOUND\r\n", Result.NOTFOUND),
    OK("incr-value", Op.INCR, b"42\r\n", Result.FOUND),
    OK("incr-wrapped", Op.INCR, b"0\r\n", Result.FOUND),
    OK("decr-u64-max", Op.DECR, b"18446744073709551615\r\n", Result.FOUND),
    OK("incr-not-found", Op.INCR, b"NOT_FOUND\r\n", Result.NOTFOUND),
    OK(
        "incr-non-numeric",
        Op.INCR,
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        Result.CLIENT_ERROR,
    ),
    OK("flush-all", Op.FLUSH_ALL, b"OK\r\n", Result.OK),
    OK("verbosity", Op.VERBOSITY, b"OK\r\n", Result.OK),
    OK("version", Op.VERSION, b"VERSION 1.6.18\r\n", Result.OK),
    # retrieval
    OK("get-miss", Op.GET, b"END\r\n", Result.NOTFOUND),
    OK("get-hit", Op.GET, b"VALUE k 0 3\r\nabc\r\nEND\r\n", Result.FOUND),
    OK("get-empty-value", Op.GET, b"VALUE k 5 0\r\n\r\nEND\r\n", Result.FOUND),
    OK("get-crlf-in-value", Op.GET, b"VALUE k 0 8\r\na\r\nEND\r\n\r\nEND\r\n", Result.FOUND),
    OK("get-value-like-header", Op.GET, b"VALUE k 0 11\r\nVALUE k 0 1\r\nEND\r\n", Result.FOUND),
    OK("gets-hit", Op.GETS, b"VALUE k 0 1 77\r\nx\r\nEND\r\n", Result.FOUND),
    OK("gat-hit", Op.GAT, b"VALUE k 1 1\r\nx\r\nEND\r\n", Result.FOUND),
    OK("gats-two", Op.GATS, b"VALUE a 0 1 5\r\nx\r\nVALUE b 0 2 6\r\nyz\r\nEND\r\n", Result.FOUND),
    OK("get-tab-in-key", Op.GET, b"VALUE a\tb 0 1\r\nx\r\nEND\r\n", Result.FOUND),
    OK(
        "get-client-error", Op.GET, b"CLIENT_ERROR bad command line format\r\n", Result.CLIENT_ERROR
    ),
    OK("get-error", Op.GET, b"ERROR\r\n", Result.ERROR),
    OK(
        "get-oom-after-hit",
        Op.GET,
        b"VALUE a 0 1\r\nx\r\nSERVER_ERROR out of memory writing get response\r\n",
        Result.REMOTE_ERROR,
    ),
    # meta
    OK("mg-miss", Op.MG, b"EN\r\n", Result.NOTFOUND),
    OK("mg-miss-flags", Op.MG, b"EN knokey Oabc\r\n", Result.NOTFOUND),
    OK("mg-hit", Op.MG, b"HD\r\n", Result.FOUND),
    OK("mg-hit-flags", Op.MG, b"HD f0 s3 t-1\r\n", Result.FOUND),
    OK("mg-value", Op.MG, b"VA 3 f42 s3 kh1 Oxyz\r\nabc\r\n", Result.FOUND),
    OK("mg-value-crlf", Op.MG, b"VA 4\r\na\r\nb\r\n", Result.FOUND),
    OK("mg-value-empty", Op.MG, b"VA 0 W\r\n\r\n", Result.FOUND),
    OK("mg-invalid-flag", Op.MG, b"CLIENT_ERROR invalid flag\r\n", Result.CLIENT_ERROR),
    OK("ms-stored", Op.MS, b"HD c53 ks1 Oop\r\n", Result.STORED),
    OK("ms-not-stored", Op.MS, b"NS\r\n", Result.NOTSTORED),
    OK("ms-exists", Op.MS, b"EX\r\n", Result.EXISTS),
    OK("ms-not-found", Op.MS, b"NF\r\n", Result.NOTFOUND),
    OK("ms-too-large", Op.MS, b"SERVER_ERROR object too large for cache\r\n", Result.REMOTE_ERROR),
    OK("md-deleted", Op.MD, b"HD\r\n", Result.DELETED),
    OK("md-not-found", Op.MD, b"NF kd2 O99\r\n", Result.NOTFOUND),
    OK("md-exists", Op.MD, b"EX\r\n", Result.EXISTS),
    OK("ma-hit", Op.MA, b"HD\r\n", Result.FOUND),
    OK("ma-value", Op.MA, b"VA 2 t-1 c66\r\n13\r\n", Result.FOUND),
    OK("ma-not-found", Op.MA, b"NF\r\n", Result.NOTFOUND),
    OK("ma-not-stored", Op.MA, b"NS\r\n", Result.NOTSTORED),
    OK("ma-exists", Op.MA, b"EX\r\n", Result.EXISTS),
    OK("me-hit", Op.ME, b"ME k exp=-1 la=0 cas=1 fetch=no cls=1 size=63\r\n", Result.FOUND),
    OK("me-miss", Op.ME, b"EN\r\n", Result.NOTFOUND),
]


@pytest.mark.parametrize("case", COMPLETE, ids=[case.id for case in COMPLETE])
def test_complete_reply(case: Complete) -> None:
    for buf in (case.raw, bytearray(case.raw)):
        framed = frame_reply(buf, 0, case.op)
        assert framed is not None
        reply, end = framed
        assert (reply.result, reply.raw, end) == (case.result, case.raw, len(case.raw))


@pytest.mark.parametrize("case", COMPLETE, ids=[case.id for case in COMPLETE])
def test_every_prefix_needs_more(case: Complete) -> None:
    for cut in range(len(case.raw)):
        assert frame_reply(case.raw[:cut], 0, case.op) is None, case.raw[:cut]


@pytest.mark.parametrize("case", COMPLETE, ids=[case.id for case in COMPLETE])
def test_framed_inside_a_stream(case: Complete) -> None:
    # Replies are framed in place: after a previous reply, and with the next one's
    # first bytes already buffered.
    stream = b"junk-before" + case.raw + b"NEXT"
    framed = frame_reply(stream, len(b"junk-before"), case.op)
    assert framed is not None
    reply, end = framed
    assert reply.raw == case.raw
    assert stream[end:] == b"NEXT"


@attrs.frozen
class Garbage:
    id: str
    op: Op
    raw: bytes


BAD = Garbage
GARBAGE: list[Garbage] = [
    BAD("value-answering-set", Op.SET, b"VALUE k 0 1\r\nx\r\nEND\r\n"),
    BAD("end-answering-set", Op.SET, b"END\r\n"),
    BAD("exists-answering-set", Op.SET, b"EXISTS\r\n"),
    BAD("deleted-answering-set", Op.SET, b"DELETED\r\n"),
    BAD("stored-answering-delete", Op.DELETE, b"STORED\r\n"),
    BAD("stored-answering-get", Op.GET, b"STORED\r\n"),
    BAD("hd-answering-get", Op.GET, b"HD\r\n"),
    BAD("touched-answering-incr", Op.INCR, b"TOUCHED\r\n"),
    BAD("negative-incr", Op.INCR, b"-1\r\n"),
    BAD("text-incr", Op.DECR, b"abc\r\n"),
    BAD("lowercase-stored", Op.SET, b"stored\r\n"),
    BAD("trailing-space", Op.SET, b"STORED \r\n"),
    BAD("version-answering-touch", Op.TOUCH, b"VERSION 1.6.18\r\n"),
    BAD("value-not-crlf-terminated", Op.GET, b"VALUE k 0 3\r\nabcXYEND\r\n"),
    BAD("value-too-short", Op.GET, b"VALUE k 0 3\r\nab\r\nEND\r\n"),
    BAD("value-line-3-words", Op.GET, b"VALUE k 0\r\n"),
    BAD("value-line-6-words", Op.GET, b"VALUE k 0 1 2 3\r\n"),
    BAD("value-size-not-digits", Op.GET, b"VALUE k 0 x\r\n"),
    BAD("value-size-negative", Op.GET, b"VALUE k 0 -1\r\n"),
    BAD("value-size-over-1g", Op.GET, b"VALUE k 0 1073741825\r\n"),
    BAD("garbage-after-value", Op.GET, b"VALUE k 0 1\r\nx\r\nSTORED\r\n"),
    BAD("client-error-after-value", Op.GET, b"VALUE k 0 1\r\nx\r\nCLIENT_ERROR x\r\n"),
    BAD("hd-bad-suffix", Op.MG, b"HDX\r\n"),
    BAD("en-bad-suffix", Op.MG, b"ENfoo\r\n"),
    BAD("nf-answering-mg", Op.MG, b"NF\r\n"),
    BAD("en-answering-ms", Op.MS, b"EN\r\n"),
    BAD("va-answering-ms", Op.MS, b"VA 1\r\nx\r\n"),
    BAD("va-answering-md", Op.MD, b"VA 1\r\nx\r\n"),
    BAD("va-no-size", Op.MG, b"VA\r\n"),
    BAD("va-bad-size", Op.MG, b"VA x\r\n"),
    BAD("va-not-crlf-terminated", Op.MG, b"VA 2\r\nabc\r\n"),
    BAD("classic-answering-mg", Op.MG, b"END\r\n"),
    BAD("mn-answering-ma", Op.MA, b"MN\r\n"),
    BAD("value-answering-me", Op.ME, b"VALUE k 0 1\r\nx\r\nEND\r\n"),
]


@pytest.mark.parametrize("case", GARBAGE, ids=[case.id for case in GARBAGE])
def test_garbage_breaks_the_stream(case: Garbage) -> None:
    with pytest.raises(ReplyStreamError):
        frame_reply(case.raw, 0, case.op)


@pytest.mark.parametrize("op", [Op.SET, Op.GET, Op.MG], ids=["set", "get", "mg"])
def test_reply_line_over_the_limit(op: Op) -> None:
    assert frame_reply(b"x" * MAX_REPLY_LINE, 0, op) is None
    with pytest.raises(ReplyStreamError):
        frame_reply(b"x" * (MAX_REPLY_LINE + 1), 0, op)


def test_line_after_a_value_over_the_limit() -> None:
    head = b"VALUE k 0 1\r\nx\r\n"
    assert frame_reply(head + b"V" * MAX_REPLY_LINE, 0, Op.GET) is None
    with pytest.raises(ReplyStreamError):
        frame_reply(head + b"V" * (MAX_REPLY_LINE + 1), 0, Op.GET)


def test_big_value_is_not_a_long_line() -> None:
    data = b"v" * (4 * MAX_REPLY_LINE)
    raw = b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(data), data)
    assert frame_reply(raw[:-1], 0, Op.GET) is None
    framed = frame_reply(raw, 0, Op.GET)
    assert framed is not None and framed[0].raw == raw


def test_pipelined_stream_byte_by_byte() -> None:
    """A backend stream fed one byte at a time yields each reply exactly once."""
    pending = [case for case in COMPLETE if case.op not in (Op.VERSION,)]
    stream = b"".join(case.raw for case in pending)
    buf = bytearray()
    pos = 0
    framed: list[bytes] = []
    queue = list(pending)
    for i in range(len(stream)):
        buf += stream[i : i + 1]
        while queue:
            result = frame_reply(buf, pos, queue[0].op)
            if result is None:
                break
            reply, pos = result
            assert reply.result is queue.pop(0).result
            framed.append(reply.raw)
    assert framed == [case.raw for case in pending]
    assert pos == len(buf)


def test_values_walks_blocks() -> None:
    raw = b"VALUE a 0 3\r\nabc\r\nVALUE b 7 4 99\r\nx\r\ny\r\nEND\r\n"
    assert list(values(raw)) == [
        (b"a", b"VALUE a 0 3", b"VALUE a 0 3\r\nabc\r\n"),
        (b"b", b"VALUE b 7 4 99", b"VALUE b 7 4 99\r\nx\r\ny\r\n"),
    ]
    assert list(values(b"END\r\n")) == []


QUIET_MA = [
    # (backend bytes for `ma ... q` + `mn`, what the client sees, result)
    (b"MN\r\n", b"", Result.FOUND),
    (b"HD\r\nMN\r\n", b"HD\r\n", Result.FOUND),
    (b"NF\r\nMN\r\n", b"NF\r\n", Result.NOTFOUND),
    (b"VA 2 c9\r\n13\r\nMN\r\n", b"VA 2 c9\r\n13\r\n", Result.FOUND),
    (b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n",
     b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", Result.CLIENT_ERROR),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "shown", "result"), QUIET_MA)
def test_quiet_ma_is_framed_with_its_mn(raw: bytes, shown: bytes, result: Result) -> None:
    stream = b"before" + raw + b"NEXT"
    framed = frame_reply(stream, len(b"before"), Op.MA_QUIET)
    assert framed is not None
    reply, end = framed
    assert (reply.raw, reply.result, stream[end:]) == (shown, result, b"NEXT")
    for cut in range(len(raw)):
        assert frame_reply(raw[:cut], 0, Op.MA_QUIET) is None, raw[:cut]


@pytest.mark.parametrize("raw", [b"HD\r\nHD\r\n", b"NF\r\nEN\r\n", b"HD\r\nMX", b"EN\r\nMN\r\n"])
def test_quiet_ma_without_its_mn_breaks_the_stream(raw: bytes) -> None:
    with pytest.raises(ReplyStreamError):
        frame_reply(raw, 0, Op.MA_QUIET)


TOKENS = st.binary(min_size=1, max_size=6).map(lambda raw: raw.replace(b" ", b"_"))


@st.composite
def get_replies(draw: st.DrawFn) -> bytes:
    """Get replies of many shapes: well-formed hits, lying sizes, odd tokens, no END."""
    data = draw(st.binary(max_size=12))
    size = draw(st.one_of(st.just(len(data)), st.integers(0, 20)))
    line = b"VALUE %s %s %d" % (draw(TOKENS), draw(TOKENS), size)
    if draw(st.booleans()):
        line += b" " + draw(TOKENS)
    tail = draw(st.sampled_from([b"\r\nEND\r\n", b"\r\nEND", b"\r\n", b"END\r\n", b""]))
    return line + b"\r\n" + data + tail


def outcome(frame: Callable[[], tuple[Reply, int] | None]) -> object:
    try:
        framed = frame()
    except ReplyStreamError:
        return "stream error"
    return None if framed is None else (framed[0].result, framed[0].raw, framed[1])


@given(get_replies(), st.integers(0, 3))
@settings(max_examples=1000)
def test_single_hit_shortcut_agrees_with_the_general_get_framing(reply: bytes, offset: int) -> None:
    buf = b"x" * offset + reply
    end = buf.find(b"\r\n", offset)
    shortcut = outcome(lambda: frame_reply(buf, offset, Op.GET))
    general = None if end < 0 else outcome(lambda: _frame_get(buf, offset, None))
    assert shortcut == general


# -- a long get reply arriving in many reads ---------------------------------------------


def frame_in_reads(stream: bytes, cuts: list[int], op: Op) -> list[object]:
    """Frame `stream` as a connection does: each read appended, framing resumed with
    the connection's `GetProgress`, the buffer compacted between reads (so the start
    of the reply being framed moves)."""
    progress = GetProgress()
    buf = bytearray()
    pos = fed = 0
    framed: list[object] = []
    for end in [*sorted(set(cuts)), len(stream)]:
        buf += stream[fed:end]
        fed = max(fed, end)
        while True:
            try:
                result = frame_reply(buf, pos, op, progress)
            except ReplyStreamError:
                return [*framed, "stream error"]
            if result is None:
                break
            reply, pos = result
            framed.append((reply.result, reply.raw))
        del buf[:pos]
        pos = 0
    return framed


def frame_at_once(stream: bytes, op: Op) -> list[object]:
    return frame_in_reads(stream, [], op)


@given(
    st.lists(st.one_of(get_replies(), st.sampled_from([b"END\r\n", b"SERVER_ERROR oom\r\n"]))),
    st.lists(st.integers(0, 400)),
)
@settings(max_examples=1000)
def test_get_replies_framed_in_reads_are_the_replies_framed_at_once(
    replies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(replies)
    assert frame_in_reads(stream, cuts, Op.GET) == frame_at_once(stream, Op.GET)


def test_a_long_get_reply_is_walked_once() -> None:
    """What was framed before a read is not walked again: bytes there are not read."""
    blocks = b"".join(b"VALUE k%d 0 1\r\nx\r\n" % i for i in range(1000))
    progress = GetProgress()
    buf = bytearray(blocks[:-7])
    assert frame_reply(buf, 0, Op.GET, progress) is None
    walked = progress.framed
    assert walked > len(blocks) - 100
    # Were the framer to start again from the reply's start, this would break the stream.
    buf[:walked] = b"#" * walked
    buf += blocks[-7:] + b"END\r\n"
    framed = frame_reply(buf, 0, Op.GET, progress)
    assert framed is not None
    assert framed[0].result is Result.FOUND
    assert framed[1] == len(buf)
    assert (progress.framed, progress.hits) == (0, 0)  # ready for the next reply


# -- batched gets: one multi-key get, split back into one reply per key -----------------

BATCH_KEYS = st.lists(
    st.sampled_from([b"a", b"b", b"c", b"key:1", b"key:2"]), min_size=1, max_size=12
)
#: Values framed by their length, so any bytes (CRLF, "END") must pass through.
BATCH_VALUE = st.binary(max_size=20) | st.just(b"x\r\nEND\r\n")


def single_reply(key: bytes, stored: dict[bytes, bytes]) -> bytes:
    """What `get key` alone gets from memcached."""
    if key not in stored:
        return b"END\r\n"
    return b"VALUE %s 5 %d\r\n%s\r\nEND\r\n" % (key, len(stored[key]), stored[key])


def batch_reply(keys: list[bytes], stored: dict[bytes, bytes]) -> bytes:
    """What `get k1 ... kn` gets from memcached: the hits in key order, then END."""
    return b"".join(single_reply(key, stored)[:-5] for key in keys) + b"END\r\n"


@given(BATCH_KEYS, st.dictionaries(st.sampled_from([b"a", b"b", b"key:1"]), BATCH_VALUE))
@settings(max_examples=300)
def test_a_batched_get_is_split_into_the_replies_of_single_gets(
    keys: list[bytes], stored: dict[bytes, bytes]
) -> None:
    raw = b"before" + batch_reply(keys, stored) + b"after"
    framer = GetBatchFramer(keys)
    assert framer.frame(raw, len(b"before")) == len(raw) - len(b"after")
    assert [reply.raw for reply in framer.replies] == [single_reply(k, stored) for k in keys]
    hits = [reply.result is Result.FOUND for reply in framer.replies]
    assert hits == [key in stored for key in keys]


@given(BATCH_KEYS, st.dictionaries(st.sampled_from([b"a", b"c", b"key:2"]), BATCH_VALUE))
@settings(max_examples=100)
def test_a_batched_get_reply_cut_anywhere_waits_then_resumes(
    keys: list[bytes], stored: dict[bytes, bytes]
) -> None:
    raw = batch_reply(keys, stored)
    framer = GetBatchFramer(keys)
    for cut in range(len(raw)):  # the same framer sees the reply grow byte by byte
        assert framer.frame(raw[:cut], 0) is None, raw[:cut]
    assert framer.frame(raw, 0) == len(raw)
    assert [reply.raw for reply in framer.replies] == [single_reply(k, stored) for k in keys]


def test_an_error_line_answers_every_key_not_answered_yet() -> None:
    keys = [b"a", b"b", b"c"]
    error = b"SERVER_ERROR out of memory writing get response\r\n"
    framer = GetBatchFramer(keys)
    raw = b"VALUE b 0 1\r\nx\r\n" + error
    assert framer.frame(raw, 0) == len(raw)
    assert [r.raw for r in framer.replies] == [b"END\r\n", b"VALUE b 0 1\r\nx\r\nEND\r\n", error]
    assert framer.replies[2].result is Result.REMOTE_ERROR

    framer = GetBatchFramer(keys)
    raw = b"CLIENT_ERROR bad command line format\r\n"
    assert framer.frame(raw, 0) == len(raw)
    assert [r.raw for r in framer.replies] == [raw] * 3
    assert {r.result for r in framer.replies} == {Result.CLIENT_ERROR}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"VALUE z 0 1\r\nx\r\nEND\r\n", id="key-not-asked-for"),
        pytest.param(b"VALUE b 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n", id="keys-out-of-order"),
        pytest.param(b"VALUE a 0 1\r\nxy\r\nEND\r\n", id="size-lies"),
        pytest.param(b"VALUE a 0 1\r\nx\r\nCLIENT_ERROR late\r\n", id="client-error-after-a-hit"),
        pytest.param(b"STORED\r\n", id="not-a-get-reply"),
        pytest.param(b"VALUE a 0 x\r\nx\r\nEND\r\n", id="size-not-a-number"),
        pytest.param(b"VALUE a 0 1073741825\r\nx", id="size-beyond-memcached"),
    ],
)
def test_a_batched_get_reply_that_cannot_be_one_breaks_the_stream(raw: bytes) -> None:
    with pytest.raises(ReplyStreamError):
        GetBatchFramer([b"a", b"b"]).frame(raw, 0)
