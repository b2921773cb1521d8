"""BigValueRoute in memory: chunk keys, the index item, batches, reassembly."""

from __future__ import annotations

import base64
import json

import pytest
from handle_helpers import MISS, STORED, TIMEOUT, destinations, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.messages import Reply, Request, Result
from mcrouter_trio.protocol import RequestParser
from mcrouter_trio.routing.handles.bigvalue import BigValueRoute, parse_index, value_suffix
from mcrouter_trio.routing.testing import FakeContext

(TARGET,) = destinations(1)
VALUE = b"0123456789abcdefghijklmnopqrstu"  # 31 bytes: chunks of 10, 10, 10, 1
SUFFIX = spooky_hash64(VALUE) & 0xFFFF_FFFF


def _wires(ctx: FakeContext) -> list[bytes]:
    return [sent.request.to_wire() for sent in ctx.sent]


def _hit(key: bytes, flags: int, data: bytes, cas: bytes = b"") -> Reply:
    head = b"VALUE %s %d %d%s\r\n" % (key, flags, len(data), cas)
    return Reply(Result.FOUND, head + data + b"\r\nEND\r\n")


def test_the_suffix_is_the_low_half_of_spooky64() -> None:
    assert value_suffix(VALUE) == SUFFIX
    assert value_suffix(b"") == spooky_hash64(b"") & 0xFFFF_FFFF


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (b"1-2-1234", (2, 1234)),
        (b"2-2-1234", None),
        (b"1-2", None),
        (b"1-2-x", None),
        (b"1-2-1234-5", None),
        (b"", None),
    ],
)
def test_index_parsing(text: bytes, parsed: tuple[int, int] | None) -> None:
    assert parse_index(text) == parsed


@pytest.mark.parametrize(
    ("batch_size", "batches"), [(0, [4]), (1, [1, 1, 1, 1]), (3, [3, 1]), (10, [4])]
)
def test_a_big_set_writes_chunks_in_batches_then_the_index(
    batch_size: int, batches: list[int]
) -> None:
    route = BigValueRoute(TARGET, 10, batch_size)
    ctx = FakeContext()
    pending = route.route(request(b"set k 5 60 31\r\n" + VALUE + b"\r\n"), ctx)
    seen = []
    while ctx.waiting[0].request.key != b"k":  # chunks, until the index item
        waiting = ctx.waiting
        seen.append(len(waiting))
        for sent in waiting:
            sent.answer(STORED)
    assert seen == batches
    chunks = [VALUE[:10], VALUE[10:20], VALUE[20:30], VALUE[30:]]
    assert _wires(ctx)[:4] == [
        b"set k:%d:%d 5 60 %d\r\n%s\r\n" % (i, SUFFIX, len(chunk), chunk)
        for i, chunk in enumerate(chunks)
    ]
    (index,) = ctx.waiting
    index_value = b"1-4-%d" % SUFFIX
    assert index.request.to_wire() == b"set k %d 60 %d\r\n%s\r\n" % (
        5 | 0x8000, len(index_value), index_value)  # fmt: skip
    index.answer(STORED)
    assert pending.reply is STORED


@pytest.mark.parametrize("at_once", [True, False], ids=["answered-at-once", "answered-later"])
def test_thousands_of_batches_neither_nest_nor_lose_the_reply(at_once: bool) -> None:
    """mcrouter's test_bigvalue: 21 MB in 5000-byte chunks, 2 at a time, is 2100
    batches; answered as they are sent (a TKO server) or each later."""
    value = b"abc" * 3_500_000
    ctx = FakeContext(answer=(lambda _server, _request: STORED) if at_once else None)
    route = BigValueRoute(TARGET, 5000, 2)
    parser = RequestParser(max_value_size=len(value))
    parser.feed(b"set k 0 0 %d\r\n%s\r\n" % (len(value), value))
    big_set = parser.next_event()
    assert isinstance(big_set, Request)
    pending = route.route(big_set, ctx)
    while pending.reply is None:
        for sent in ctx.waiting:
            sent.answer(STORED)
    assert pending.reply is STORED
    assert len(ctx.sent) == 2100 + 1  # the chunks, then the index item


def test_a_failed_chunk_answers_its_reply_and_writes_no_index() -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 0).route(
        request(b"add k 0 0 31\r\n" + VALUE + b"\r\n"), ctx
    )
    replies = [STORED, TIMEOUT, STORED, STORED]
    for sent, reply in zip(ctx.sent, replies, strict=True):
        sent.answer(reply)
    assert pending.reply is TIMEOUT and len(ctx.sent) == 4


@pytest.mark.parametrize(
    "wire",
    [b"set k 0 0 10\r\n0123456789\r\n", b"append k 0 0 31\r\n" + VALUE + b"\r\n", b"delete k\r\n"],
)
def test_small_values_and_other_commands_pass_through(wire: bytes) -> None:
    ctx = FakeContext()
    BigValueRoute(TARGET, 10, 0).route(request(wire), ctx)
    assert _wires(ctx) == [request(wire).to_wire()]


def test_cas_writes_the_index_with_the_cas_unique() -> None:
    ctx = FakeContext(answer=lambda server, req: STORED)
    BigValueRoute(TARGET, 10, 0).route(request(b"cas k 1 0 31 99\r\n" + VALUE + b"\r\n"), ctx)
    index_value = b"1-4-%d" % SUFFIX
    assert _wires(ctx)[-1] == b"cas k %d 0 %d 99\r\n%s\r\n" % (
        1 | 0x8000, len(index_value), index_value)  # fmt: skip


# (hide_reply_flag, command, what the chunks answer, the client's reply)
READ_ROWS = [
    pytest.param(False, b"get k\r\n", [b"abc", b"de"], b"VALUE k 32771 5\r\nabcde\r\nEND\r\n",
                 id="flag-shown"),
    pytest.param(True, b"get k\r\n", [b"abc", b"de"], b"VALUE k 3 5\r\nabcde\r\nEND\r\n",
                 id="flag-hidden"),
    pytest.param(True, b"gets k\r\n", [b"abc", b"de"], b"VALUE k 3 5 5\r\nabcde\r\nEND\r\n",
                 id="gets-index-cas"),
    pytest.param(True, b"get k\r\n", [b"abc", None], b"END\r\n", id="missing-chunk-miss"),
]  # fmt: skip


@pytest.mark.parametrize(("hide", "wire", "chunks", "client"), READ_ROWS)
def test_reads_reassemble_the_chunks(
    hide: bool, wire: bytes, chunks: list[bytes | None], client: bytes
) -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 1, hide).route(request(wire), ctx)
    ctx.sent[0].answer(
        _hit(b"k", 0x8000 | 3, b"1-2-77", b" 5" if wire.startswith(b"gets") else b"")
    )
    for i, chunk in enumerate(chunks):
        sent = ctx.sent[1 + i]
        assert sent.request.to_wire() == b"get k:%d:77\r\n" % i
        sent.answer(MISS if chunk is None else _hit(b"k:%d:77" % i, 3, chunk))
    assert pending.reply is not None and pending.reply.raw == client


def test_an_invalid_index_is_the_default_reply_and_plain_hits_pass() -> None:
    route = BigValueRoute(TARGET, 10, 0)
    ctx = FakeContext()
    bad = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[0].answer(_hit(b"k", 0x8000, b"2-2-77"))
    assert bad.reply is not None and bad.reply.raw == b"END\r\n" and len(ctx.sent) == 1
    plain = _hit(b"k", 3, b"v")
    ok = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[1].answer(plain)
    assert ok.reply is plain


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 1}, "required field missing @ $.route.split_threshold"),
        ({"split_threshold": 10}, "required field missing @ $.route.batch_size"),
        ({"split_threshold": 0, "batch_size": 1}, "got 0 @ $.route.split_threshold"),
    ],
)
def test_bad_bigvalue_configs(options: dict[str, object], message: str) -> None:
    route = {"type": "BigValueRoute", "target": "PoolRoute|A", **options}
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"]}}, "route": route}
    with pytest.raises(ConfigError) as caught:
        load_config(json.dumps(config))
    assert message in str(caught.value)


# -- meta commands: the same paths as their classic twins ----------------------------

HD = Reply(Result.STORED, b"HD\r\n")
INDEX = b"1-4-%d" % SUFFIX


def _meta_hit(flags: int, data: bytes, *tokens: bytes) -> Reply:
    tail = b"".join(b" " + token for token in tokens)
    return Reply(Result.FOUND, b"VA %d%s f%d\r\n%s\r\n" % (len(data), tail, flags, data))


# (the client's ms line, the chunks' classic set header, the index ms line)
MS_SPLIT_ROWS = [
    pytest.param(b"ms k 31 F5 T60", b"5 60", b"ms k 14 T60 F32773", id="flags-and-exptime"),
    pytest.param(b"ms k 31", b"0 0", b"ms k 14 F32768", id="defaults"),
    pytest.param(b"ms k 31 O9 k c", b"0 0", b"ms k 14 O9 k c F32768", id="return-flags-kept"),
    pytest.param(b"ms k 31 ME T-1", b"0 -1", b"ms k 14 ME T-1 F32768", id="add-mode"),
    pytest.param(b"ms k 31 MR", b"0 0", b"ms k 14 MR F32768", id="replace-mode"),
    pytest.param(b"ms k 31 C99 F1", b"1 0", b"ms k 14 C99 F32769", id="cas"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "chunk_args", "index_line"), MS_SPLIT_ROWS)
def test_a_big_ms_is_split_like_set(line: bytes, chunk_args: bytes, index_line: bytes) -> None:
    ctx = FakeContext(answer=lambda server, req: HD if req.key == b"k" else STORED)
    pending = BigValueRoute(TARGET, 10, 0).route(request(line + b"\r\n" + VALUE + b"\r\n"), ctx)
    chunks = [VALUE[:10], VALUE[10:20], VALUE[20:30], VALUE[30:]]
    assert _wires(ctx) == [
        *(b"set k:%d:%d %s %d\r\n%s\r\n" % (i, SUFFIX, chunk_args, len(chunk), chunk)
          for i, chunk in enumerate(chunks)),
        index_line + b"\r\n" + INDEX + b"\r\n",  # the index is 14 bytes long
    ]  # fmt: skip
    assert pending.reply is HD


@pytest.mark.parametrize(
    "line",
    [b"ms k 31 MA", b"ms k 31 MP", b"ms k 31 Fx", b"ms k 31 T", b"ms k 10", b"md k", b"ma k"],
)
def test_meta_commands_that_are_not_split_pass_through(line: bytes) -> None:
    body = b"" if not line.startswith(b"ms") else b"\r\n" + VALUE[: int(line.split()[2])]
    ctx = FakeContext()
    BigValueRoute(TARGET, 10, 0).route(request(line + body + b"\r\n"), ctx)
    assert _wires(ctx) == [request(line + body + b"\r\n").to_wire()]


def test_a_chunk_not_stored_answers_ns_with_the_echoed_flags() -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 0).route(
        request(b"ms k 31 O7 k ME\r\n" + VALUE + b"\r\n"), ctx
    )
    for sent, reply in zip(ctx.sent, [STORED, Reply(Result.NOTSTORED, b"NOT_STORED\r\n"),
                                      STORED, STORED], strict=True):  # fmt: skip
        sent.answer(reply)
    assert pending.reply is not None and pending.reply.raw == b"NS O7 kk\r\n"
    assert len(ctx.sent) == 4  # no index


def test_a_big_ms_with_a_base64_key_writes_base64_chunk_keys() -> None:
    # "Zm9v" is "foo": chunks are foo:<i>:<suffix>, sent base64-encoded with b.
    ctx = FakeContext(answer=lambda server, req: HD)
    BigValueRoute(TARGET, 30, 0).route(request(b"ms Zm9v 31 b F2\r\n" + VALUE + b"\r\n"), ctx)
    first, second, index = (sent.request for sent in ctx.sent)
    assert first.to_wire() == b"ms %s 30 b F2 T0\r\n%s\r\n" % (
        base64.b64encode(b"foo:0:%d" % SUFFIX), VALUE[:30])  # fmt: skip
    assert second.key == base64.b64encode(b"foo:1:%d" % SUFFIX)
    assert index.to_wire() == b"ms Zm9v 14 b F32770\r\n%s\r\n" % (b"1-2-%d" % SUFFIX)


# (hide_reply_flag, the client's mg line, what it is sent as, the index reply's tokens,
#  the client's reply)
MG_ROWS = [
    pytest.param(False, b"mg k v", b"mg k v f", (), b"VA 5\r\nabcde\r\n", id="value"),
    pytest.param(False, b"mg k v f", b"mg k v f", (), b"VA 5 f32771\r\nabcde\r\n",
                 id="flag-shown"),
    pytest.param(True, b"mg k f v", b"mg k f v", (), b"VA 5 f3\r\nabcde\r\n", id="flag-hidden"),
    pytest.param(True, b"mg k s t c k O1", b"mg k s t c k O1 v f",
                 (b"s6", b"t-1", b"c42", b"kk", b"O1"), b"HD s5 t-1 c42 kk O1\r\n",
                 id="no-value-size-of-the-whole"),
    pytest.param(True, b"mg k q v", b"mg k v f", (), b"VA 5\r\nabcde\r\n", id="quiet"),
]  # fmt: skip


@pytest.mark.parametrize(("hide", "line", "sent", "tokens", "client"), MG_ROWS)
def test_mg_reads_a_big_value_with_the_flags_asked_for(
    hide: bool, line: bytes, sent: bytes, tokens: tuple[bytes, ...], client: bytes
) -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 1, hide).route(request(line + b"\r\n"), ctx)
    assert ctx.sent[0].request.to_wire() == sent + b"\r\n"
    ctx.sent[0].answer(_meta_hit(0x8000 | 3, b"1-2-77", *tokens))
    for i, chunk in enumerate([b"abc", b"de"]):
        assert ctx.sent[1 + i].request.to_wire() == b"get k:%d:77\r\n" % i
        ctx.sent[1 + i].answer(_hit(b"k:%d:77" % i, 3, chunk))
    assert pending.reply is not None and pending.reply.raw == client


@pytest.mark.parametrize(
    ("line", "backend", "client"),
    [
        (b"mg k v", _meta_hit(3, b"xy", b"t5"), b"VA 2 t5\r\nxy\r\n"),
        (b"mg k s", _meta_hit(3, b"xy", b"s2"), b"HD s2\r\n"),
        (b"mg k f k", Reply(Result.FOUND, b"VA 2 f3 kk\r\nxy\r\n"), b"HD f3 kk\r\n"),
        (b"mg k v O1", Reply(Result.NOTFOUND, b"EN O1\r\n"), b"EN O1\r\n"),
        (b"mg k v", TIMEOUT, TIMEOUT.raw),
    ],
)
def test_mg_of_a_plain_item_answers_only_the_flags_asked_for(
    line: bytes, backend: Reply, client: bytes
) -> None:
    ctx = FakeContext(answer=lambda server, req: backend)
    pending = BigValueRoute(TARGET, 10, 0).route(request(line + b"\r\n"), ctx)
    assert pending.reply is not None and pending.reply.raw == client and len(ctx.sent) == 1


def test_mg_of_a_big_value_with_a_lost_chunk_is_a_miss() -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 0).route(request(b"mg k v O5 k\r\n"), ctx)
    ctx.sent[0].answer(_meta_hit(0x8000, b"1-2-77", b"O5", b"kk"))
    ctx.sent[1].answer(_hit(b"k:0:77", 0, b"abc"))
    ctx.sent[2].answer(MISS)
    assert pending.reply is not None and pending.reply.raw == b"EN O5 kk\r\n"


def test_mg_with_a_base64_key_reads_base64_chunks() -> None:
    ctx = FakeContext()
    pending = BigValueRoute(TARGET, 10, 0).route(request(b"mg Zm9v b v\r\n"), ctx)
    ctx.sent[0].answer(_meta_hit(0x8000, b"1-1-77", b"b"))
    chunk = ctx.sent[1].request
    assert chunk.to_wire() == b"mg %s b v f\r\n" % base64.b64encode(b"foo:0:77")
    ctx.sent[1].answer(_meta_hit(0, b"hello", b"b"))
    assert pending.reply is not None and pending.reply.raw == b"VA 5 b\r\nhello\r\n"
