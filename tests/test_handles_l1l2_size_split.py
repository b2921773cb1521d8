"""L1L2SizeSplitRoute in memory: big values in L2 behind a sentinel in L1."""

from __future__ import annotations

import pytest
from handle_helpers import MISS, STORED, TIMEOUT, destinations, port_of, request

from mcrouter_trio.messages import Reply, Result
from mcrouter_trio.routing.handles.l1l2_size_split import L1L2SizeSplitRoute
from mcrouter_trio.routing.testing import FakeContext

L1, L2 = destinations(2)
SENTINEL = Reply(Result.FOUND, b"VALUE k 37 0 77\r\n\r\nEND\r\n")  # flags 5 | 0x20, cas 77
SUFFIXED = Reply(Result.FOUND, b"VALUE k 32 3 77\r\n123\r\nEND\r\n")  # a lease-set sentinel
L2_VALUE = Reply(Result.FOUND, b"VALUE k 5 10 9\r\n0123456789\r\nEND\r\n")


def _route(**options: object) -> L1L2SizeSplitRoute:
    return L1L2SizeSplitRoute(L1, L2, **{"threshold": 10, **options})  # type: ignore[arg-type]


def _trace(ctx: FakeContext) -> list[tuple[int, bytes]]:
    return [(port_of(sent), sent.request.to_wire()) for sent in ctx.sent]


# (options, value, where the set goes first)
SET_ROWS = [
    pytest.param({}, b"short", 1, id="under-threshold-l1"),
    pytest.param({}, b"0123456789", 2, id="at-threshold-l2"),
    pytest.param({"threshold": 0}, b"0123456789", 1, id="threshold-0-never-splits"),
    pytest.param({"ttl_threshold": 100}, b"0123456789", 1, id="short-ttl-l1"),
    pytest.param({"both_full_set": True}, b"0123456789", 1, id="both-full-set-l1-first"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "value", "first"), SET_ROWS)
def test_where_a_set_goes(options: dict[str, object], value: bytes, first: int) -> None:
    ctx = FakeContext()
    _route(**options).route(request(b"set k 5 50 %d\r\n%s\r\n" % (len(value), value)), ctx)
    assert port_of(ctx.sent[0]) == first


def test_a_big_set_stores_l2_then_the_sentinel_in_l1() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"set k 5 50 10\r\n0123456789\r\n"), ctx)
    ctx.sent[0].answer(STORED)
    ctx.sent[1].answer(STORED)
    assert _trace(ctx) == [(2, b"set k 5 50 10\r\n0123456789\r\n"), (1, b"set k 37 50 0\r\n\r\n")]
    assert pending.reply is STORED


def test_l2_failing_leaves_l1_alone() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"set k 5 50 10\r\n0123456789\r\n"), ctx)
    ctx.sent[0].answer(TIMEOUT)
    assert pending.reply is TIMEOUT and len(ctx.sent) == 1


def test_both_full_set_copies_to_l2_in_the_background_once_stored() -> None:
    ctx = FakeContext()
    pending = _route(both_full_set=True).route(request(b"set k 5 0 10\r\n0123456789\r\n"), ctx)
    ctx.sent[0].answer(STORED)
    assert pending.reply is STORED
    assert _trace(ctx)[1] == (2, b"set k 5 0 10\r\n0123456789\r\n")
    assert ctx.background.in_flight == 1


# (command, L1's reply, L2's reply, the L2 request, the client's reply)
READ_ROWS = [
    pytest.param(b"get k\r\n", MISS, None, None, b"END\r\n", id="l1-miss"),
    pytest.param(b"get k\r\n", L2_VALUE, None, None, L2_VALUE.raw, id="l1-plain-hit"),
    pytest.param(b"get k\r\n", SENTINEL, L2_VALUE, b"get k\r\n", L2_VALUE.raw,
                 id="sentinel-l2s-reply"),
    pytest.param(b"get k\r\n", SENTINEL, MISS, b"get k\r\n", b"END\r\n",
                 id="sentinel-l2-miss-as-is"),
    pytest.param(b"gets k\r\n", SENTINEL, L2_VALUE, b"get k\r\n",
                 b"VALUE k 5 10 77\r\n0123456789\r\nEND\r\n", id="gets-l1s-cas"),
    pytest.param(b"get k\r\n", SUFFIXED, L2_VALUE, b"get k|==|123\r\n",
                 b"VALUE k 5 10\r\n0123456789\r\nEND\r\n", id="suffixed-sentinel"),
    pytest.param(b"get k\r\n", SUFFIXED, MISS, b"get k|==|123\r\n",
                 b"SERVER_ERROR local error\r\n", id="suffixed-l2-miss"),
    pytest.param(b"get k\r\n", SUFFIXED, TIMEOUT, b"get k|==|123\r\n", TIMEOUT.raw,
                 id="suffixed-l2-error"),
]  # fmt: skip


@pytest.mark.parametrize(("wire", "l1", "l2", "l2_request", "client"), READ_ROWS)
def test_reads(
    wire: bytes, l1: Reply, l2: Reply | None, l2_request: bytes | None, client: bytes
) -> None:
    ctx = FakeContext()
    pending = _route().route(request(wire), ctx)
    ctx.sent[0].answer(l1)
    if l2_request is not None:
        assert _trace(ctx)[1] == (2, l2_request)
        assert l2 is not None
        ctx.sent[1].answer(l2)
    else:
        assert len(ctx.sent) == 1
    assert pending.reply is not None and pending.reply.raw == client


def test_gets_of_a_stale_sentinel_expires_it_and_tries_again() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"gets k\r\n"), ctx)
    ctx.sent[0].answer(SENTINEL)
    ctx.sent[1].answer(MISS)  # L2 lost the value
    ctx.sent[2].answer(SENTINEL)  # the sentinel, read again with its CAS unique
    assert _trace(ctx)[2:] == [(1, b"gets k\r\n"), (1, b"cas k 0 -1 0 77\r\n\r\n")]
    ctx.sent[3].answer(Reply(Result.STORED, b"STORED\r\n"))
    ctx.sent[4].answer(MISS)  # the retry: L1 is empty now
    assert _trace(ctx)[4] == (1, b"gets k\r\n")
    assert pending.reply is MISS


@pytest.mark.parametrize(
    "wire",
    [
        b"add k 0 0 10\r\n0123456789\r\n",
        b"delete k\r\n",
        b"md k\r\n",
        b"ms k 10 ME\r\n0123456789\r\n",  # add mode: L1, as add
        b"ms k 10 C5\r\n0123456789\r\n",  # cas: L1, as cas
        b"ms k 10 Fx\r\n0123456789\r\n",  # refused by the backend: passed on whole
    ],
)
def test_other_commands_go_to_l1_as_they_are(wire: bytes) -> None:
    ctx = FakeContext()
    _route().route(request(wire), ctx)
    assert _trace(ctx) == [(1, request(wire).to_wire())]


# -- meta commands: ms like set, mg like get (gets when it asks for c) ---------------

HD = Reply(Result.STORED, b"HD\r\n")
META_SENTINEL = Reply(Result.FOUND, b"VA 0 t50 c77 f37\r\n\r\n")  # after "mg k t c" + v f


def test_a_big_ms_stores_l2_then_a_sentinel_ms_in_l1() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"ms k 10 F5 T50 O1 k\r\n0123456789\r\n"), ctx)
    ctx.sent[0].answer(HD)
    reply = Reply(Result.STORED, b"HD O1 kk\r\n")
    ctx.sent[1].answer(reply)
    assert _trace(ctx) == [
        (2, b"ms k 10 F5 T50 O1 k\r\n0123456789\r\n"),
        (1, b"ms k 0 T50 O1 k F37\r\n\r\n"),
    ]
    assert pending.reply is reply


@pytest.mark.parametrize(
    ("line", "first"),
    [
        (b"ms k 5 F5", 1),
        (b"ms k 10 T5", 2),
        (b"ms k 10 MS", 2),
        (b"ms k 10 T5 b", 2),
    ],
)
def test_where_an_ms_goes(line: bytes, first: int) -> None:
    ctx = FakeContext()
    key_line = line.replace(b" k ", b" aw== ") if line.endswith(b" b") else line
    size = int(line.split()[2])
    _route().route(request(key_line + b"\r\n" + b"x" * size + b"\r\n"), ctx)
    assert port_of(ctx.sent[0]) == first


def test_ttl_threshold_reads_the_ms_exptime() -> None:
    ctx = FakeContext()
    _route(ttl_threshold=100).route(request(b"ms k 10 T50\r\n0123456789\r\n"), ctx)
    assert port_of(ctx.sent[0]) == 1


# (command, what L1 is sent, L1's reply, L2's request and reply, the client's reply)
META_READ_ROWS = [
    pytest.param(b"mg k v", b"mg k v f", Reply(Result.FOUND, b"VA 2 f5\r\nhi\r\n"), None,
                 None, b"VA 2\r\nhi\r\n", id="plain-hit"),
    pytest.param(b"mg k v O1", b"mg k v O1 f", Reply(Result.NOTFOUND, b"EN O1\r\n"), None, None,
                 b"EN O1\r\n", id="miss"),
    pytest.param(b"mg k s v", b"mg k s v f", Reply(Result.FOUND, b"VA 0 s0 f37\r\n\r\n"),
                 b"mg k s v", Reply(Result.FOUND, b"VA 10 s10\r\n0123456789\r\n"),
                 b"VA 10 s10\r\n0123456789\r\n", id="sentinel-l2s-reply-as-is"),
    pytest.param(b"mg k t c", b"mg k t c v f", META_SENTINEL, b"get k", L2_VALUE,
                 b"HD t50 c77\r\n", id="with-c-l1s-cas"),
    pytest.param(b"mg k f v c", b"mg k f v c", Reply(Result.FOUND, b"VA 0 f37 c77\r\n\r\n"),
                 b"get k", L2_VALUE,
                 b"VA 10 f5 c77\r\n0123456789\r\n", id="with-c-l2s-value-and-flags"),
    pytest.param(b"mg k v", b"mg k v f", Reply(Result.FOUND, b"VA 3 f32\r\n123\r\n"),
                 b"get k|==|123", L2_VALUE, b"VA 10\r\n0123456789\r\n",
                 id="suffixed-sentinel"),
    pytest.param(b"mg k v", b"mg k v f", Reply(Result.FOUND, b"VA 3 f32\r\n123\r\n"),
                 b"get k|==|123", MISS, b"SERVER_ERROR local error\r\n",
                 id="suffixed-l2-miss"),
    pytest.param(b"mg aw== b v", b"mg aw== b v f", Reply(Result.FOUND, b"VA 3 b f32\r\n123\r\n"),
                 b"mg a3w9PXwxMjM= b v f", Reply(Result.FOUND, b"VA 2 b f9\r\nhi\r\n"),
                 b"VA 2 b\r\nhi\r\n", id="base64-key"),
]  # fmt: skip


@pytest.mark.parametrize(("wire", "sent", "l1", "l2_request", "l2", "client"), META_READ_ROWS)
def test_meta_reads(
    wire: bytes,
    sent: bytes,
    l1: Reply,
    l2_request: bytes | None,
    l2: Reply | None,
    client: bytes,
) -> None:
    ctx = FakeContext()
    pending = _route().route(request(wire + b"\r\n"), ctx)
    assert _trace(ctx) == [(1, sent + b"\r\n")]
    ctx.sent[0].answer(l1)
    if l2_request is not None:
        assert _trace(ctx)[1] == (2, l2_request + b"\r\n")
        assert l2 is not None
        ctx.sent[1].answer(l2)
    assert pending.reply is not None and pending.reply.raw == client


def test_mg_with_c_of_a_stale_sentinel_expires_it_and_tries_again() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"mg k t c\r\n"), ctx)
    ctx.sent[0].answer(META_SENTINEL)
    ctx.sent[1].answer(MISS)  # L2 lost the value
    ctx.sent[2].answer(SENTINEL)  # the sentinel, read again with its CAS unique
    assert _trace(ctx)[2:] == [(1, b"gets k\r\n"), (1, b"cas k 0 -1 0 77\r\n\r\n")]
    ctx.sent[3].answer(STORED)
    ctx.sent[4].answer(Reply(Result.NOTFOUND, b"EN\r\n"))  # the retry: L1 is empty now
    assert _trace(ctx)[4] == (1, b"mg k t c v f\r\n")
    assert pending.reply is not None and pending.reply.raw == b"EN\r\n"


def test_a_stale_sentinel_under_a_base64_key_is_expired_with_meta_commands() -> None:
    ctx = FakeContext()
    pending = _route().route(request(b"mg aw== b c\r\n"), ctx)
    ctx.sent[0].answer(Reply(Result.FOUND, b"VA 3 c7 f32\r\n123\r\n"))
    assert _trace(ctx)[1] == (2, b"mg a3w9PXwxMjM= b v f\r\n")  # k|==|123
    ctx.sent[1].answer(Reply(Result.NOTFOUND, b"EN\r\n"))
    ctx.sent[2].answer(Reply(Result.FOUND, b"VA 3 f32 c7\r\n123\r\n"))
    assert _trace(ctx)[2:] == [(1, b"mg aw== b v f c\r\n"), (1, b"ms aw== 0 b C7 T-1\r\n\r\n")]
    ctx.sent[3].answer(HD)
    assert _trace(ctx)[4] == (1, b"mg aw== b c v f\r\n")
    ctx.sent[4].answer(Reply(Result.NOTFOUND, b"EN\r\n"))
    assert pending.reply is not None and pending.reply.raw == b"EN\r\n"
