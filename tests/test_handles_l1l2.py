"""L1L2CacheRoute in memory: reads through L1 to L2, refills, negative caching."""

from __future__ import annotations

import json

import pytest
from handle_helpers import DELETED, HIT, MISS, TIMEOUT, destinations, port_of, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.messages import Reply, Result
from mcrouter_trio.routing.handles.l1l2 import L1L2CacheRoute
from mcrouter_trio.routing.testing import FakeContext

L1, L2 = destinations(2)
NCACHE = Reply(Result.FOUND, b"VALUE k 65536 6\r\nncache\r\nEND\r\n")
L2_HIT = Reply(Result.FOUND, b"VALUE k 7 3\r\nbig\r\nEND\r\n")


def _route(**options: int) -> L1L2CacheRoute:
    return L1L2CacheRoute(L1, L2, upgradingL1Exptime=options.pop("upgrading", 30), **options)


def _wire(sent: object) -> bytes:
    return sent.request.to_wire()  # type: ignore[attr-defined, no-any-return]


# (ncacheUpdatePeriod, L1's reply, L2's reply or None if not asked, the client's reply,
#  what goes to L1 in the background)
GET_ROWS = [
    pytest.param(0, HIT, None, HIT.raw, [], id="l1-hit"),
    pytest.param(0, MISS, L2_HIT, L2_HIT.raw, [b"add k 7 30 3\r\nbig\r\n"], id="l2-hit-added"),
    pytest.param(0, TIMEOUT, L2_HIT, L2_HIT.raw, [b"add k 7 30 3\r\nbig\r\n"],
                 id="l1-error-reads-l2"),
    pytest.param(0, MISS, MISS, b"END\r\n", [], id="l2-miss-no-ncache"),
    pytest.param(5, MISS, MISS, b"END\r\n", [b"add k 65536 9 6\r\nncache\r\n"],
                 id="l2-miss-ncache-added"),
    pytest.param(5, MISS, TIMEOUT, TIMEOUT.raw, [], id="l2-error-no-ncache"),
    pytest.param(0, NCACHE, None, b"END\r\n", [], id="ncache-item-is-a-miss"),
]  # fmt: skip


@pytest.mark.parametrize(("period", "l1", "l2", "client", "refill"), GET_ROWS)
def test_get_rules(
    period: int, l1: Reply, l2: Reply | None, client: bytes, refill: list[bytes]
) -> None:
    ctx = FakeContext()
    pending = _route(ncacheUpdatePeriod=period, ncacheExptime=9).route(request(b"get k\r\n"), ctx)
    ctx.sent[0].answer(l1)
    if l2 is not None:
        assert port_of(ctx.sent[1]) == 2
        ctx.sent[1].answer(l2)
    assert pending.reply is not None and pending.reply.raw == client
    rest = ctx.sent[2:] if l2 is not None else ctx.sent[1:]
    assert [(port_of(sent), _wire(sent)) for sent in rest] == [(1, wire) for wire in refill]


@pytest.mark.parametrize(
    "wire", [b"set k 0 0 1\r\nv\r\n", b"delete k\r\n", b"incr k 1\r\n", b"touch k 5\r\n"]
)
def test_every_other_command_goes_to_l1_only(wire: bytes) -> None:
    ctx = FakeContext()
    pending = _route().route(request(wire), ctx)
    (sent,) = ctx.sent
    assert port_of(sent) == 1
    sent.answer(DELETED)
    assert pending.reply is DELETED


def test_every_period_th_ncache_hit_refreshes_l1_from_l2() -> None:
    route = _route(ncacheUpdatePeriod=3, ncacheExptime=9)
    ctx = FakeContext()
    for _ in range(3):
        route.route(request(b"get k\r\n"), ctx)
        ctx.waiting[0].answer(NCACHE)
    # The third ncache hit asked L2 again; its hit is set into L1.
    (refresh,) = ctx.waiting
    assert (port_of(refresh), _wire(refresh)) == (2, b"get k\r\n")
    refresh.answer(L2_HIT)
    (set_l1,) = ctx.waiting
    assert (port_of(set_l1), _wire(set_l1)) == (1, b"set k 7 30 3\r\nbig\r\n")
    set_l1.answer(Reply(Result.STORED, b"STORED\r\n"))
    # Three more: the next refresh finds L2 still empty and renews the ncache item.
    for _ in range(3):
        route.route(request(b"get k\r\n"), ctx)
        ctx.waiting[0].answer(NCACHE)
    ctx.waiting[0].answer(MISS)
    assert _wire(ctx.waiting[0]) == b"set k 65536 9 6\r\nncache\r\n"


def test_gets_returns_l2s_reply_and_fills_l1_with_add() -> None:
    ctx = FakeContext()
    l2_gets = Reply(Result.FOUND, b"VALUE k 7 3 42\r\nbig\r\nEND\r\n")
    pending = _route().route(request(b"gets k\r\n"), ctx)
    ctx.sent[0].answer(MISS)
    ctx.sent[1].answer(l2_gets)
    assert pending.reply is l2_gets
    assert _wire(ctx.sent[2]) == b"add k 7 30 3\r\nbig\r\n"


def test_meta_get_reads_l2_on_an_l1_miss_without_a_refill() -> None:
    ctx = FakeContext()
    hit = Reply(Result.FOUND, b"VA 3\r\nbig\r\n")
    pending = _route(ncacheUpdatePeriod=1).route(request(b"mg k v\r\n"), ctx)
    ctx.sent[0].answer(Reply(Result.NOTFOUND, b"EN\r\n"))
    ctx.sent[1].answer(hit)
    assert pending.reply is hit and len(ctx.sent) == 2


def test_upgrading_l1_exptime_is_required() -> None:
    route = {"type": "L1L2CacheRoute", "l1": "PoolRoute|A", "l2": "PoolRoute|A"}
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"]}}, "route": route}
    with pytest.raises(
        ConfigError, match=r"required field missing @ \$\.route\.upgradingL1Exptime"
    ):
        load_config(json.dumps(config))
