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
    "wire", [b"add k 0 0 10\r\n0123456789\r\n", b"delete k\r\n", b"mg k v\r\n"]
)
def test_other_commands_go_to_l1_as_they_are(wire: bytes) -> None:
    ctx = FakeContext()
    _route().route(request(wire), ctx)
    assert _trace(ctx) == [(1, request(wire).to_wire())]
