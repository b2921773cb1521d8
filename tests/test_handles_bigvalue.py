"""BigValueRoute in memory: chunk keys, the index item, batches, reassembly."""

from __future__ import annotations

import json

import pytest
from handle_helpers import MISS, STORED, TIMEOUT, destinations, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.messages import Reply, Result
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
