"""Every route handle's rules, one table row each, run in memory through `FakeContext`.

Requests come from the proxy's own parser; the test plays the servers by
answering each recorded send. Expected choices of hash-based handles are
computed with the hash functions themselves (`mcrouter_trio.hashing`), not with
the selectors the handles use.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from _routing import (
    MISS,
    NOT_STORED,
    SERVERS,
    STORED,
    TIMEOUT,
    answer_all,
    dest,
    error,
    hit,
    parse,
    resolved,
    server_index,
)

from mcrouter_trio import hashing
from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing import routing_key
from mcrouter_trio.messages import FAILOVER_ERRORS, Pending, Reply, Request, Result
from mcrouter_trio.routing import NO_ROUTE, PoolSpec, Route
from mcrouter_trio.routing.handles.broadcast import AllSyncRoute
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.failover import FailoverRoute, LatestRoute
from mcrouter_trio.routing.handles.hash import HashRoute, HashSpec, PoolRoute
from mcrouter_trio.routing.handles.selector import OperationSelectorRoute, PrefixSelectorRoute
from mcrouter_trio.routing.handles.simple import ErrorRoute, NullRoute, RandomRoute
from mcrouter_trio.routing.handles.warmup import WarmUpRoute
from mcrouter_trio.routing.testing import FakeContext


def no_split(route: Route, request: Request) -> Pending:
    raise AssertionError(f"split {request!r} through {route!r}")


# ---------------------------------------------------------------------------
# DestinationRoute


@pytest.mark.parametrize(
    ("client", "keep", "sent", "server_reply", "client_reply"),
    [
        pytest.param(
            b"get /r/c/key\r\n", False, b"get key\r\n",
            b"VALUE key 3 1\r\nv\r\nEND\r\n", b"VALUE /r/c/key 3 1\r\nv\r\nEND\r\n",
            id="get-stripped-and-restored",
        ),
        pytest.param(
            b"gets /r/c/a /r/c/bb\r\n", False, b"gets a bb\r\n",
            b"VALUE a 0 1 7\r\n1\r\nVALUE bb 0 2 8\r\n22\r\nEND\r\n",
            b"VALUE /r/c/a 0 1 7\r\n1\r\nVALUE /r/c/bb 0 2 8\r\n22\r\nEND\r\n",
            id="multi-key-gets-stripped-and-restored",
        ),
        pytest.param(
            b"get /r/c/key\r\n", False, b"get key\r\n", b"END\r\n", b"END\r\n", id="get-miss"
        ),
        pytest.param(
            b"set /r/c/key 5 0 1\r\nv\r\n", False, b"set key 5 0 1\r\nv\r\n",
            b"STORED\r\n", b"STORED\r\n", id="set-stripped",
        ),
        pytest.param(
            b"get /r/c/key\r\n", True, b"get /r/c/key\r\n",
            b"VALUE /r/c/key 0 1\r\nv\r\nEND\r\n", b"VALUE /r/c/key 0 1\r\nv\r\nEND\r\n",
            id="keep-routing-prefix",
        ),
        pytest.param(
            b"get /r/key\r\n", False, b"get /r/key\r\n",
            b"VALUE /r/key 0 1\r\nv\r\nEND\r\n", b"VALUE /r/key 0 1\r\nv\r\nEND\r\n",
            id="two-slashes-are-no-routing-prefix",
        ),
        pytest.param(
            b"get key\r\n", False, b"get key\r\n",
            b"VALUE key 0 1\r\nv\r\nEND\r\n", b"VALUE key 0 1\r\nv\r\nEND\r\n",
            id="no-prefix",
        ),
    ],
)  # fmt: skip
def test_destination_route(
    client: bytes, keep: bool, sent: bytes, server_reply: bytes, client_reply: bytes
) -> None:
    ctx = FakeContext()
    pending = DestinationRoute(SERVERS[3], keep).route(parse(client), ctx)
    [only] = ctx.sent
    assert only.server == SERVERS[3]
    assert only.request.to_wire() == sent
    result = Result.FOUND if server_reply.startswith(b"VALUE") else Result.NOTFOUND
    if server_reply == b"STORED\r\n":
        result = Result.STORED
    only.answer(Reply(result, server_reply))
    assert pending.reply is not None
    assert pending.reply.raw == client_reply


# ---------------------------------------------------------------------------
# HashRoute and PoolRoute

KEYS = [b"key%d" % number for number in range(40)]


def pool(size: int, name: str = "P", weights: tuple[float, ...] | None = None) -> PoolSpec:
    return PoolSpec(name, SERVERS[:size], weights=weights)


WEIGHTS = (1.0, 0.2, 0.6, 0.05)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param(
            HashRoute(tuple(dest(i) for i in range(5))), lambda key: hashing.ch3(key, 5),
            id="HashRoute-Ch3",
        ),
        pytest.param(
            HashRoute(tuple(dest(i) for i in range(5)), salt="s1"),
            lambda key: hashing.ch3(key + b"s1", 5), id="HashRoute-salt",
        ),
        pytest.param(
            HashRoute(tuple(dest(i) for i in range(7)), hash_func="Crc32"),
            lambda key: hashing.crc32(key, 7), id="HashRoute-Crc32",
        ),
        pytest.param(PoolRoute(pool(6)), lambda key: hashing.ch3(key, 6), id="PoolRoute-Ch3"),
        pytest.param(
            PoolRoute(pool(4, weights=WEIGHTS)), lambda key: hashing.weighted_ch3(key, WEIGHTS),
            id="PoolRoute-weights-mean-WeightedCh3",
        ),
        pytest.param(
            PoolRoute(pool(4), HashSpec("WeightedCh3", weights=WEIGHTS)),
            lambda key: hashing.weighted_ch3(key, WEIGHTS), id="PoolRoute-hash-WeightedCh3",
        ),
        pytest.param(
            PoolRoute(pool(5), HashSpec("Crc32", salt="x")),
            lambda key: hashing.crc32(key + b"x", 5), id="PoolRoute-hash-object",
        ),
    ],
)  # fmt: skip
def test_hash_routes_pick_the_hashed_child(route: Route, expected: Callable[[bytes], int]) -> None:
    chosen = []
    for key in KEYS:
        ctx = FakeContext()
        route.route(parse(b"get " + key + b"\r\n"), ctx)
        assert server_index(ctx) == expected(key), key
        chosen.append(server_index(ctx))
    assert len(set(chosen)) > 1  # the keys spread, so a constant choice would fail


def test_pool_weights_change_the_choice() -> None:
    """Without its weights the same pool would place some keys elsewhere."""
    weighted, plain = PoolRoute(pool(4, weights=WEIGHTS)), PoolRoute(pool(4))
    differs = 0
    for key in KEYS:
        ctx = FakeContext()
        weighted.route(parse(b"get " + key + b"\r\n"), ctx)
        plain.route(parse(b"get " + key + b"\r\n"), ctx)
        differs += ctx.sent[0].server != ctx.sent[1].server
    assert differs


@pytest.mark.parametrize(
    ("client", "hashed"),
    [
        pytest.param(b"get /r/c/foo\r\n", b"foo", id="routing-prefix"),
        pytest.param(b"get foo|#|tail\r\n", b"foo", id="hash-stop"),
        pytest.param(b"set /r/c/foo|#|x 0 0 1\r\nv\r\n", b"foo", id="both"),
        pytest.param(b"mg Zm9vYmFy b v\r\n", b"foobar", id="meta-base64-key"),
        pytest.param(b"mg foobar v\r\n", b"foobar", id="meta-plain-key"),
    ],
)
def test_hash_routes_hash_the_routing_key(client: bytes, hashed: bytes) -> None:
    ctx = FakeContext()
    PoolRoute(pool(8)).route(parse(client), ctx)
    assert server_index(ctx) == hashing.ch3(hashed, 8)


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(HashRoute(()), b"", id="HashRoute"),
        pytest.param(HashRoute((), name="mine"), b"mine", id="named"),
        pytest.param(PoolRoute(PoolSpec("empty", ())), b"empty", id="PoolRoute"),
    ],
)
def test_hash_route_with_no_children_answers_an_error(route: Route, message: bytes) -> None:
    ctx = FakeContext()
    pending = route.route(parse(b"get k\r\n"), ctx)
    assert pending.reply is not None
    assert (
        pending.reply.raw == b"SERVER_ERROR HashRoute with empty children, name: %s\r\n" % message
    )
    assert pending.reply.result is Result.LOCAL_ERROR
    assert not ctx.sent


def test_hash_route_with_one_child_sends_every_key_there() -> None:
    route = HashRoute((dest(9),))
    for key in KEYS:
        ctx = FakeContext()
        route.route(parse(b"get " + key + b"\r\n"), ctx)
        assert server_index(ctx) == 9


def keys_on(server: int, size: int, count: int) -> list[bytes]:
    return [key for key in KEYS if hashing.ch3(key, size) == server][:count]


def test_route_whole_sends_a_multiget_whole_when_every_key_hashes_to_one_server() -> None:
    together = keys_on(2, 4, 3)
    ctx = FakeContext()
    pending = PoolRoute(pool(4)).route_whole(
        parse(b"get %s\r\n" % b" ".join(together)), ctx, no_split
    )
    assert pending is not None
    [only] = ctx.sent
    assert server_index(ctx) == 2
    assert only.request.to_wire() == b"get %s\r\n" % b" ".join(together)


def test_route_whole_sends_each_server_its_keys_and_merges_in_key_order() -> None:
    # Keys in client order: a on 0, b on 1, c on 0 (a repeat of a on 0 too).
    a, c = keys_on(0, 4, 2)
    [b] = keys_on(1, 4, 1)
    ctx = FakeContext()
    pending = PoolRoute(pool(4)).route_whole(
        parse(b"get %s %s %s %s\r\n" % (a, b, c, a)), ctx, no_split
    )
    assert pending is not None
    sent = {server_index(ctx, i): ctx.sent[i] for i in range(len(ctx.sent))}
    assert sorted(sent) == [0, 1]
    assert sent[0].request.keys == (a, c, a)
    assert sent[1].request.keys == (b,)
    block = b"VALUE %s 0 1\r\nx\r\n"
    sent[1].answer(Reply(Result.FOUND, block % b + b"END\r\n"))
    assert not resolved(pending)  # merged once every server answered
    # Server 0 misses c: its reply leaves c out and repeats a.
    sent[0].answer(Reply(Result.FOUND, block % a + block % a + b"END\r\n"))
    assert pending.reply is not None
    assert pending.reply.result is Result.FOUND
    assert pending.reply.raw == block % a + block % b + block % a + b"END\r\n"


def test_route_whole_puts_the_first_error_in_key_order_in_place_of_end() -> None:
    [a] = keys_on(0, 4, 1)
    b, d = keys_on(1, 4, 2)
    [c] = keys_on(2, 4, 1)
    ctx = FakeContext()
    pending = PoolRoute(pool(4)).route_whole(
        parse(b"get %s %s %s %s\r\n" % (a, b, c, d)), ctx, no_split
    )
    assert pending is not None
    sent = {server_index(ctx, i): ctx.sent[i] for i in range(len(ctx.sent))}
    block = b"VALUE %s 0 1\r\nx\r\n"
    sent[0].answer(Reply(Result.FOUND, block % a + b"END\r\n"))
    # Server 1 answered b, then failed part-way: d has its error.
    sent[1].answer(Reply(Result.REMOTE_ERROR, block % b + b"SERVER_ERROR out of memory\r\n"))
    sent[2].answer(Reply(Result.TIMEOUT, b"SERVER_ERROR timeout\r\n"))
    # c (server 2) comes before d (server 1) in key order: c's error wins.
    assert pending.reply is not None
    assert pending.reply.result is Result.TIMEOUT
    assert pending.reply.raw == block % a + block % b + b"SERVER_ERROR timeout\r\n"


def test_route_whole_splits_only_the_keys_of_a_child_that_cannot_take_them_whole() -> None:
    split_through: list[tuple[Route, Request]] = []

    def split(route: Route, request: Request) -> Pending:
        split_through.append((route, request))
        return Pending(MISS)

    # A destination that strips routing prefixes does it key by key: no whole get.
    stripping = DestinationRoute(SERVERS[1])
    route = HashRoute((dest(0), stripping))
    plain = next(key for key in KEYS if route.select(routing_key(key)) == 0)
    prefixed = next(
        b"/r/c/" + key for key in KEYS if route.select(routing_key(b"/r/c/" + key)) == 1
    )
    ctx = FakeContext()
    pending = route.route_whole(parse(b"get %s %s\r\n" % (plain, prefixed)), ctx, split)
    assert pending is not None
    assert [(r, req.keys) for r, req in split_through] == [(stripping, (prefixed,))]
    assert [sent.request.keys for sent in ctx.sent] == [(plain,)]


# ---------------------------------------------------------------------------
# FailoverRoute

FAILOVER_ROWS = {
    Result.TIMEOUT: error(Result.TIMEOUT, b"SERVER_ERROR Reply timeout"),
    Result.CONNECT_ERROR: error(Result.CONNECT_ERROR, b"SERVER_ERROR connection refused"),
    Result.CONNECT_TIMEOUT: error(Result.CONNECT_TIMEOUT, b"SERVER_ERROR connect timeout"),
    Result.BUSY: error(Result.BUSY, b"SERVER_ERROR busy"),
    Result.TKO: error(Result.TKO, b"SERVER_ERROR unavailable"),
    Result.REMOTE_ERROR: error(Result.REMOTE_ERROR, b"SERVER_ERROR out of memory"),
    Result.LOCAL_ERROR: error(Result.LOCAL_ERROR, b"SERVER_ERROR local error"),
}


def test_the_failover_rows_cover_every_failover_error() -> None:
    assert set(FAILOVER_ROWS) == FAILOVER_ERRORS


@pytest.mark.parametrize("first", FAILOVER_ROWS.values(), ids=[r.name for r in FAILOVER_ROWS])
def test_failover_route_fails_over_on(first: Reply) -> None:
    ctx = FakeContext()
    pending = FailoverRoute((dest(0), dest(1), dest(2))).route(parse(b"get k\r\n"), ctx)
    ctx.sent[0].answer(first)
    assert not resolved(pending)
    assert server_index(ctx, 1) == 1
    second = hit(b"k")
    ctx.sent[1].answer(second)
    assert pending.reply is second
    assert len(ctx.sent) == 2


@pytest.mark.parametrize(
    ("client", "first"),
    [
        pytest.param(b"get k\r\n", MISS, id="miss"),
        pytest.param(b"add k 0 0 1\r\nv\r\n", NOT_STORED, id="NOT_STORED"),
        pytest.param(
            b"incr k 1\r\n",
            error(
                Result.CLIENT_ERROR, b"CLIENT_ERROR cannot increment or decrement non-numeric value"
            ),
            id="CLIENT_ERROR",
        ),
        pytest.param(b"get k\r\n", error(Result.ERROR, b"ERROR"), id="ERROR"),
        pytest.param(b"get k\r\n", hit(b"k"), id="hit"),
    ],
)
def test_failover_route_keeps_the_first_reply_on(client: bytes, first: Reply) -> None:
    ctx = FakeContext()
    pending = FailoverRoute((dest(0), dest(1))).route(parse(client), ctx)
    ctx.sent[0].answer(first)
    assert pending.reply is first
    assert len(ctx.sent) == 1


def test_failover_route_answers_the_last_reply_when_every_child_fails() -> None:
    ctx = FakeContext()
    pending = FailoverRoute((dest(0), dest(1), dest(2))).route(parse(b"get k\r\n"), ctx)
    last = error(Result.CONNECT_ERROR, b"SERVER_ERROR last")
    for sent, reply in zip(ctx.sent, (TIMEOUT, FAILOVER_ROWS[Result.BUSY], last), strict=False):
        sent.answer(reply)
    answer_all(ctx, pending, lambda _request: last)
    assert [server_index(ctx, i) for i in range(3)] == [0, 1, 2]
    assert pending.reply is last


@pytest.mark.parametrize(
    ("client", "default"),
    [
        pytest.param(b"get k\r\n", b"END\r\n", id="get"),
        pytest.param(b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n", id="set"),
        pytest.param(b"delete k\r\n", b"NOT_FOUND\r\n", id="delete"),
    ],
)
def test_failover_route_without_children_answers_the_default_reply(
    client: bytes, default: bytes
) -> None:
    ctx = FakeContext()
    pending = FailoverRoute(()).route(parse(client), ctx)
    assert pending.reply is not None and pending.reply.raw == default
    assert not ctx.sent


class SplitRecorder:
    """A router's `split`: records its calls and routes each key through the route."""

    def __init__(self, ctx: FakeContext) -> None:
        self.ctx = ctx
        self.calls: list[tuple[Route, Request]] = []

    def __call__(self, route: Route, request: Request) -> Pending:
        self.calls.append((route, request))
        pendings = [route.route(request.with_keys([key]), self.ctx) for key in request.keys or ()]
        out = Pending()
        pendings[-1].then(lambda _reply: out.resolve(Reply(Result.NOTFOUND, b"split\r\n")))
        return out


def test_failover_route_whole_sends_the_whole_get_to_the_first_child() -> None:
    ctx = FakeContext()
    split = SplitRecorder(ctx)
    pending = FailoverRoute((dest(0), dest(1))).route_whole(parse(b"get a b\r\n"), ctx, split)
    assert pending is not None
    [only] = ctx.sent
    assert (server_index(ctx), only.request.to_wire()) == (0, b"get a b\r\n")
    only.answer(hit(b"a"))
    assert pending.reply is not None and pending.reply.raw == hit(b"a").raw
    assert not split.calls


def test_failover_route_whole_splits_the_rest_after_a_failover_error() -> None:
    ctx = FakeContext()
    split = SplitRecorder(ctx)
    route = FailoverRoute((dest(0), dest(1), dest(2)))
    pending = route.route_whole(parse(b"get a b\r\n"), ctx, split)
    assert pending is not None
    ctx.sent[0].answer(TIMEOUT)
    [(rest, request)] = split.calls
    assert list(rest.targets()) == [dest(1), dest(2)]
    assert request.keys == (b"a", b"b")
    # Key by key, to the second child first; the first child is not asked again.
    assert [(server_index(ctx, i), ctx.sent[i].request.to_wire()) for i in (1, 2)] == [
        (1, b"get a\r\n"),
        (1, b"get b\r\n"),
    ]
    answer_all(ctx, pending, lambda _request: MISS)
    assert pending.reply is not None and pending.reply.raw == b"split\r\n"


# ---------------------------------------------------------------------------
# LatestRoute


def tried_by(route: Route) -> list[int]:
    """The servers a get goes to when every one of them times out."""
    ctx = FakeContext()
    pending = route.route(parse(b"get k\r\n"), ctx)
    assert answer_all(ctx, pending, lambda _request: TIMEOUT) is TIMEOUT
    return [server_index(ctx, i) for i in range(len(ctx.sent))]


EIGHT = tuple(dest(i) for i in range(8))


@pytest.mark.parametrize("failover_count", [1, 3, 5, 8, 20])
def test_latest_route_tries_failover_count_children_in_its_order(failover_count: int) -> None:
    route = LatestRoute(EIGHT, failover_count=failover_count, host_id=12345)
    tried = tried_by(route)
    assert len(tried) == min(failover_count, 8)
    assert len(set(tried)) == len(tried)
    assert [SERVERS[i] for i in tried] == [child.server for child in route.targets()]  # type: ignore[attr-defined]
    # The order is a function of the host: the same on every request and build.
    assert tried_by(LatestRoute(EIGHT, failover_count=failover_count, host_id=12345)) == tried


def test_latest_route_stops_at_the_first_reply_that_is_no_failover_error() -> None:
    route = LatestRoute(EIGHT, failover_count=5, host_id=7)
    ctx = FakeContext()
    pending = route.route(parse(b"get k\r\n"), ctx)
    ctx.sent[0].answer(TIMEOUT)
    ctx.sent[1].answer(MISS)
    assert pending.reply is MISS
    assert len(ctx.sent) == 2


def test_latest_route_orders_differ_between_hosts() -> None:
    orders = {
        tuple(tried_by(LatestRoute(EIGHT, failover_count=3, host_id=host))) for host in range(12)
    }
    firsts = {order[0] for order in orders}
    assert len(orders) > 1 and len(firsts) > 1


def test_latest_route_from_config_uses_the_host_id() -> None:
    text = json.dumps(
        {
            "pools": {"A": {"servers": [s.address for s in SERVERS[:8]]}},
            "route": {"type": "LatestRoute", "children": "Pool|A", "failover_count": 2},
        }
    )
    for host in (1, 2, 3):
        built = load_config(text, host_id=host).route
        assert tried_by(built) == tried_by(LatestRoute(EIGHT, failover_count=2, host_id=host))


# ---------------------------------------------------------------------------
# AllSyncRoute


def test_all_sync_route_sends_to_every_child_before_any_reply() -> None:
    ctx = FakeContext()
    pending = AllSyncRoute((dest(0), dest(1), dest(2))).route(parse(b"set k 0 0 1\r\nv\r\n"), ctx)
    assert [server_index(ctx, i) for i in range(3)] == [0, 1, 2]
    assert all(sent.request.to_wire() == b"set k 0 0 1\r\nv\r\n" for sent in ctx.sent)
    ctx.sent[0].answer(STORED)
    ctx.sent[2].answer(STORED)
    assert not resolved(pending)  # one child has not answered
    ctx.sent[1].answer(STORED)
    assert pending.reply is not None and pending.reply.raw == b"STORED\r\n"


A_LOCAL = error(Result.LOCAL_ERROR, b"SERVER_ERROR first")
B_LOCAL = error(Result.LOCAL_ERROR, b"SERVER_ERROR second")
TOUCHED = Reply(Result.TOUCHED, b"TOUCHED\r\n")
NOT_FOUND = Reply(Result.NOTFOUND, b"NOT_FOUND\r\n")
CLIENT = error(Result.CLIENT_ERROR, b"CLIENT_ERROR bad data chunk")
REMOTE = error(Result.REMOTE_ERROR, b"SERVER_ERROR out of memory")


SET = b"set k 0 0 1\r\nv\r\n"


@pytest.mark.parametrize(
    ("client", "replies", "order", "worst"),
    [
        pytest.param(SET, [STORED, NOT_STORED, STORED], [0, 1, 2], 1, id="not-stored"),
        pytest.param(SET, [STORED, TIMEOUT, NOT_STORED], [2, 1, 0], 1, id="timeout"),
        pytest.param(SET, [TIMEOUT, REMOTE, STORED], [0, 1, 2], 1, id="remote"),
        pytest.param(SET, [REMOTE, A_LOCAL, TIMEOUT], [0, 1, 2], 1, id="local"),
        pytest.param(SET, [CLIENT, A_LOCAL, STORED], [1, 0, 2], 0, id="client"),
        pytest.param(b"get k\r\n", [hit(b"k"), MISS], [0, 1], 1, id="miss-beats-hit"),
        # Equally bad: the first to arrive wins.
        pytest.param(SET, [A_LOCAL, B_LOCAL], [0, 1], 0, id="tie-first-arrived-0"),
        pytest.param(SET, [A_LOCAL, B_LOCAL], [1, 0], 1, id="tie-first-arrived-1"),
        pytest.param(SET, [STORED, NOT_STORED, MISS], [2, 1, 0], 2, id="tie-by-arrival-2"),
        pytest.param(SET, [STORED, NOT_STORED, MISS], [1, 2, 0], 1, id="tie-by-arrival-1"),
        # mcrouter ranks TOUCHED in its catch-all bucket, above NOT_FOUND.
        pytest.param(b"touch k 0\r\n", [TOUCHED, NOT_FOUND], [0, 1], 0, id="touched-first"),
        pytest.param(b"touch k 0\r\n", [NOT_FOUND, TOUCHED], [0, 1], 1, id="touched-last"),
    ],
)
def test_all_sync_route_answers_the_worst_reply(
    client: bytes, replies: list[Reply], order: list[int], worst: int
) -> None:
    ctx = FakeContext()
    pending = AllSyncRoute(tuple(dest(i) for i in range(len(replies)))).route(parse(client), ctx)
    for index in order:
        ctx.sent[index].answer(replies[index])
    assert pending.reply is replies[worst]


@pytest.mark.parametrize(
    ("client", "default"),
    [
        pytest.param(b"get k\r\n", b"END\r\n", id="get"),
        pytest.param(b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n", id="set"),
        pytest.param(b"touch k 0\r\n", b"NOT_FOUND\r\n", id="touch"),
    ],
)
def test_all_sync_route_without_children_answers_the_default_reply(
    client: bytes, default: bytes
) -> None:
    ctx = FakeContext()
    pending = AllSyncRoute(()).route(parse(client), ctx)
    assert pending.reply is not None and pending.reply.raw == default
    assert not ctx.sent


def test_all_sync_route_with_one_child_is_that_child() -> None:
    ctx = FakeContext()
    pending = AllSyncRoute((dest(4),)).route(parse(b"set k 0 0 1\r\nv\r\n"), ctx)
    assert server_index(ctx) == 4
    ctx.sent[0].answer(NOT_STORED)
    assert pending.reply is NOT_STORED


# ---------------------------------------------------------------------------
# OperationSelectorRoute

CLASSIC = [
    (b"get k\r\n", "get"),
    (b"gets k\r\n", "gets"),
    (b"gat 10 k\r\n", "gat"),
    (b"gats 10 k\r\n", "gats"),
    (b"set k 0 0 1\r\nv\r\n", "set"),
    (b"add k 0 0 1\r\nv\r\n", "add"),
    (b"replace k 0 0 1\r\nv\r\n", "replace"),
    (b"append k 0 0 1\r\nv\r\n", "append"),
    (b"prepend k 0 0 1\r\nv\r\n", "prepend"),
    (b"cas k 0 0 1 5\r\nv\r\n", "cas"),
    (b"delete k\r\n", "delete"),
    (b"touch k 10\r\n", "touch"),
    (b"incr k 1\r\n", "incr"),
    (b"decr k 1\r\n", "decr"),
]
META_ROWS = [
    (b"mg k v\r\n", "get"),
    (b"me k\r\n", "get"),
    (b"md k\r\n", "delete"),
    (b"ma k\r\n", "incr"),
    (b"ma k MI D2\r\n", "incr"),
    (b"ma k M+\r\n", "incr"),
    (b"ma k MD\r\n", "decr"),
    (b"ma k Md\r\n", "decr"),
    (b"ma k M- N0\r\n", "decr"),
    (b"ms k 1\r\nv\r\n", "set"),
    (b"ms k 1 T0 MA\r\nv\r\n", "append"),
    (b"ms k 1 ME\r\nv\r\n", "add"),
    (b"ms k 1 MP\r\nv\r\n", "prepend"),
    (b"ms k 1 MR\r\nv\r\n", "replace"),
    (b"ms k 1 MS\r\nv\r\n", "set"),
    (b"ms k 1 C99\r\nv\r\n", "cas"),
    (b"ms k 1 C99 MA\r\nv\r\n", "cas"),
]
POLICIES = sorted({name for _wire, name in CLASSIC})
#: Every policy its own server; the default another one.
SELECTOR = OperationSelectorRoute(
    {name: dest(index) for index, name in enumerate(POLICIES)}, dest(len(POLICIES))
)


@pytest.mark.parametrize(
    ("client", "policy"),
    [pytest.param(w, p, id=w.split(b"\r\n")[0].decode()) for w, p in CLASSIC + META_ROWS],
)
def test_operation_selector_routes_each_command_to_its_policy(client: bytes, policy: str) -> None:
    ctx = FakeContext()
    SELECTOR.route(parse(client), ctx)
    assert server_index(ctx) == POLICIES.index(policy)
    assert ctx.sent[0].request.to_wire() == parse(client).to_wire()


@pytest.mark.parametrize(
    "client", [b"set k 0 0 1\r\nv\r\n", b"delete k\r\n", b"md k\r\n", b"ms k 1 MA\r\nv\r\n"]
)
def test_operation_selector_default_policy(client: bytes) -> None:
    ctx = FakeContext()
    OperationSelectorRoute({"get": dest(0)}, dest(1)).route(parse(client), ctx)
    assert server_index(ctx) == 1


@pytest.mark.parametrize(
    ("client", "name"),
    [
        pytest.param(b"set k 0 0 1\r\nv\r\n", b"set", id="set"),
        pytest.param(b"ms k 1 ME\r\nv\r\n", b"add", id="ms-add"),
        pytest.param(b"ma k MD\r\n", b"decr", id="ma-decr"),
        pytest.param(b"md k\r\n", b"delete", id="md"),
    ],
)
def test_operation_selector_without_a_policy_answers_an_error(client: bytes, name: bytes) -> None:
    ctx = FakeContext()
    pending = OperationSelectorRoute({"get": dest(0)}).route(parse(client), ctx)
    assert pending.reply is not None
    assert (
        pending.reply.raw == b"SERVER_ERROR unexpected result mc_res_unknown (0) for %s\r\n" % name
    )
    assert not ctx.sent


# ---------------------------------------------------------------------------
# PrefixSelectorRoute


def keeping(index: int) -> DestinationRoute:
    """A destination that sends keys as they come (so what the selector sent is seen)."""
    return DestinationRoute(SERVERS[index], keep_routing_prefix=True)


PREFIXES = PrefixSelectorRoute(
    {"a": keeping(1), "ab": keeping(2), "abc": keeping(3)}, wildcard=keeping(9)
)


@pytest.mark.parametrize(
    ("key", "chosen"),
    [
        (b"abcd", 3),
        (b"abc", 3),
        (b"abx", 2),
        (b"ab", 2),
        (b"ax", 1),
        (b"b", 9),
        (b"zabc", 9),
        (b"/r/c/abcd", 3),
        (b"/r/c/ax", 1),
        (b"/r/c/zz", 9),
        (b"/abc/x/abc", 3),
    ],
)
def test_prefix_selector_longest_prefix_wins(key: bytes, chosen: int) -> None:
    ctx = FakeContext()
    PREFIXES.route(parse(b"get " + key + b"\r\n"), ctx)
    assert server_index(ctx) == chosen
    assert ctx.sent[0].request.key == key  # sent unchanged


@pytest.mark.parametrize("key", [b"zz", b"/r/c/zz", b"/a/b/"])
def test_prefix_selector_without_match_or_wildcard_answers_no_route(key: bytes) -> None:
    ctx = FakeContext()
    route = PrefixSelectorRoute({"a": dest(1)})
    pending = route.route(parse(b"get " + key + b"\r\n"), ctx)
    assert pending.reply is NO_ROUTE
    assert NO_ROUTE.raw == b"SERVER_ERROR RootRoute: No rh found\r\n"
    assert not ctx.sent


def test_prefix_selector_route_whole_when_every_key_selects_one_policy() -> None:
    ctx = FakeContext()
    pending = PREFIXES.route_whole(parse(b"get abc1 abc2\r\n"), ctx, no_split)
    assert pending is not None
    assert (server_index(ctx), ctx.sent[0].request.to_wire()) == (3, b"get abc1 abc2\r\n")
    for client in (b"get abc1 ab2\r\n", b"get zz abc\r\n"):
        assert PREFIXES.route_whole(parse(client), ctx, no_split) is None
    assert len(ctx.sent) == 1


PREFIX_SELECTOR = {"type": "PrefixSelectorRoute", "wildcard": "PoolRoute|A"}


@pytest.mark.parametrize(
    ("route", "path"),
    [
        pytest.param(
            {"type": "FailoverRoute", "children": [PREFIX_SELECTOR]},
            "$.route.children[0]",
            id="under-failover",
        ),
        pytest.param(
            {"type": "WarmUpRoute", "cold": "PoolRoute|A", "warm": PREFIX_SELECTOR},
            "$.route.warm",
            id="under-warmup",
        ),
    ],
)
def test_prefix_selector_is_only_allowed_at_the_top(route: dict[str, Any], path: str) -> None:
    text = json.dumps({"pools": {"A": {"servers": [SERVERS[0].address]}}, "route": route})
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    assert str(caught.value) == (
        f"<config>: PrefixSelectorRoute is only allowed as the route of a route tree @ {path}"
    )
    top = {"type": "PrefixSelectorRoute", "policies": {"a": "PoolRoute|A"}}
    text = json.dumps({"pools": {"A": {"servers": [SERVERS[0].address]}}, "route": top})
    assert isinstance(load_config(text).route, PrefixSelectorRoute)


# ---------------------------------------------------------------------------
# WarmUpRoute

WARM_UP = WarmUpRoute(cold=dest(0), warm=dest(1), exptime=30)
COLD, WARM = 0, 1
META_MISS = Reply(Result.NOTFOUND, b"EN\r\n")
META_HIT = Reply(Result.FOUND, b"VA 1\r\nv\r\n")


def test_warm_up_get_cold_hit_is_answered_by_cold() -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(b"get k\r\n"), ctx)
    ctx.sent[0].answer(hit(b"k", b"cold"))
    assert pending.reply is not None and pending.reply.raw == hit(b"k", b"cold").raw
    assert len(ctx.sent) == 1


def test_warm_up_get_cold_miss_warm_hit_refills_cold_in_the_background() -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(b"get k\r\n"), ctx)
    ctx.sent[0].answer(MISS)
    assert server_index(ctx, 1) == WARM
    assert ctx.sent[1].request.to_wire() == b"get k\r\n"
    warm_hit = hit(b"k", b"hello", flags=42)
    ctx.sent[1].answer(warm_hit)
    # The client has the warm value before the add is answered.
    assert pending.reply is warm_hit
    [add] = ctx.waiting
    assert server_index(ctx, 2) == COLD
    assert add.request.to_wire() == b"add k 42 30 5\r\nhello\r\n"
    assert (ctx.background.started, ctx.background.in_flight) == (1, 1)
    add.answer(STORED)
    assert ctx.background.in_flight == 0


@pytest.mark.parametrize(
    ("client", "exptime", "again"),
    [
        pytest.param(b"gets k\r\n", b"30", b"gets k\r\n", id="gets"),
        pytest.param(b"gat 100 k\r\n", b"100", b"gat 100 k\r\n", id="gat"),
        pytest.param(b"gats -1 k\r\n", b"-1", b"gats -1 k\r\n", id="gats"),
    ],
)
def test_warm_up_gets_gat_gats_wait_for_the_add_then_ask_cold_again(
    client: bytes, exptime: bytes, again: bytes
) -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(client), ctx)
    ctx.sent[0].answer(MISS)
    # warm is asked with a plain get: neither touched nor asked for a CAS
    assert (server_index(ctx, 1), ctx.sent[1].request.to_wire()) == (WARM, b"get k\r\n")
    ctx.sent[1].answer(hit(b"k", b"abc", flags=7))
    [add] = ctx.waiting
    assert server_index(ctx, 2) == COLD
    assert add.request.to_wire() == b"add k 7 %s 3\r\nabc\r\n" % exptime
    assert not resolved(pending)  # the add is waited for
    add.answer(STORED)
    [resent] = ctx.waiting
    assert (server_index(ctx, 3), resent.request.to_wire()) == (COLD, again)
    cold_hit = hit(b"k", b"abc", flags=7, cas=1234)
    resent.answer(cold_hit)
    assert pending.reply is cold_hit
    assert ctx.background.started == 0


def test_warm_up_gets_answers_colds_second_reply_even_if_it_misses() -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(b"gets k\r\n"), ctx)
    second_miss = Reply(Result.NOTFOUND, b"END\r\n")
    for reply in (MISS, hit(b"k", b"abc"), NOT_STORED, second_miss):
        ctx.waiting[0].answer(reply)
    assert pending.reply is second_miss


@pytest.mark.parametrize(
    ("cold", "warm", "answered"),
    [
        pytest.param(META_MISS, META_HIT, "warm", id="cold-miss-warm-hit"),
        pytest.param(META_MISS, Reply(Result.NOTFOUND, b"EN\r\n"), "warm", id="both-miss"),
        pytest.param(TIMEOUT, META_MISS, "warm", id="cold-error-warm-miss"),
    ],
)
def test_warm_up_mg_asks_warm_on_a_cold_miss_without_refill(
    cold: Reply, warm: Reply, answered: str
) -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(b"mg k v\r\n"), ctx)
    ctx.sent[0].answer(cold)
    assert (server_index(ctx, 1), ctx.sent[1].request.to_wire()) == (WARM, b"mg k v\r\n")
    ctx.sent[1].answer(warm)
    assert pending.reply is (warm if answered == "warm" else cold)
    assert len(ctx.sent) == 2


@pytest.mark.parametrize(
    "client",
    [
        b"set k 0 0 1\r\nv\r\n",
        b"delete k\r\n",
        b"touch k 1\r\n",
        b"incr k 1\r\n",
        b"ms k 1\r\nv\r\n",
    ],
)
def test_warm_up_other_commands_go_to_cold_only(client: bytes) -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(client), ctx)
    ctx.sent[0].answer(NOT_STORED)
    assert pending.reply is NOT_STORED
    assert [server_index(ctx, i) for i in range(len(ctx.sent))] == [COLD]


@pytest.mark.parametrize(
    ("client", "cold", "warm", "answered"),
    [
        pytest.param(b"get k\r\n", MISS, Reply(Result.NOTFOUND, b"END\r\n"), "warm", id="get-miss"),
        pytest.param(b"get k\r\n", TIMEOUT, MISS, "warm", id="get-cold-timeout"),
        pytest.param(b"get k\r\n", MISS, TIMEOUT, "warm", id="get-warm-timeout"),
        pytest.param(b"get k\r\n", A_LOCAL, B_LOCAL, "warm", id="get-both-error"),
        pytest.param(b"gets k\r\n", MISS, TIMEOUT, "cold", id="gets-warm-timeout"),
        pytest.param(b"gat 1 k\r\n", TIMEOUT, MISS, "cold", id="gat-cold-timeout"),
        pytest.param(b"gats 1 k\r\n", A_LOCAL, B_LOCAL, "cold", id="gats-both-error"),
    ],
)
def test_warm_up_without_a_warm_hit_get_answers_warm_and_the_others_cold(
    client: bytes, cold: Reply, warm: Reply, answered: str
) -> None:
    ctx = FakeContext()
    pending = WARM_UP.route(parse(client), ctx)
    ctx.sent[0].answer(cold)
    ctx.sent[1].answer(warm)
    assert pending.reply is (warm if answered == "warm" else cold)
    assert len(ctx.sent) == 2


def test_warm_up_from_config() -> None:
    pools = {"cold": {"servers": [SERVERS[0].address]}, "warm": {"servers": [SERVERS[1].address]}}
    route = {
        "type": "WarmUpRoute",
        "cold": "PoolRoute|cold",
        "warm": "PoolRoute|warm",
        "exptime": 9,
    }
    text = json.dumps({"pools": pools, "route": route})
    ctx = FakeContext()
    pending = load_config(text).route.route(parse(b"get k\r\n"), ctx)
    ctx.sent[0].answer(MISS)
    ctx.sent[1].answer(hit(b"k", b"xy", flags=1))
    assert pending.reply is not None
    assert ctx.sent[2].request.to_wire() == b"add k 1 9 2\r\nxy\r\n"


# ---------------------------------------------------------------------------
# NullRoute, ErrorRoute, RandomRoute


@pytest.mark.parametrize(
    ("client", "default"),
    [
        (b"get k\r\n", b"END\r\n"),
        (b"gets a b\r\n", b"END\r\n"),
        (b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n"),
        (b"cas k 0 0 1 1\r\nv\r\n", b"NOT_STORED\r\n"),
        (b"delete k\r\n", b"NOT_FOUND\r\n"),
        (b"touch k 1\r\n", b"NOT_FOUND\r\n"),
        (b"incr k 1\r\n", b"NOT_FOUND\r\n"),
        (b"mg k v\r\n", b"EN\r\n"),
        (b"mg k O123 k v\r\n", b"EN O123 kk\r\n"),
        (b"ms k 1\r\nv\r\n", b"NS\r\n"),
        (b"md k O9\r\n", b"NF O9\r\n"),
        (b"ma k\r\n", b"NF\r\n"),
    ],
    ids=lambda value: value.split(b"\r\n")[0].decode() if isinstance(value, bytes) else None,
)
def test_null_route_answers_nothing_happened(client: bytes, default: bytes) -> None:
    ctx = FakeContext()
    pending = NullRoute().route(parse(client), ctx)
    assert pending.reply is not None and pending.reply.raw == default
    assert not ctx.sent


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        pytest.param(ErrorRoute(), b"SERVER_ERROR local error\r\n", id="default"),
        pytest.param(ErrorRoute("go away"), b"SERVER_ERROR go away\r\n", id="response"),
        pytest.param("ErrorRoute|nope", b"SERVER_ERROR nope\r\n", id="config-shorthand"),
        pytest.param(
            {"type": "ErrorRoute", "response": "x y"}, b"SERVER_ERROR x y\r\n", id="config"
        ),
    ],
)
def test_error_route_answers_its_response(route: Route | str | dict[str, str], raw: bytes) -> None:
    if not isinstance(route, ErrorRoute):
        route = load_config(json.dumps({"route": route})).route
    ctx = FakeContext()
    for client in (b"get k\r\n", b"set k 0 0 1\r\nv\r\n"):
        pending = route.route(parse(client), ctx)
        assert pending.reply is not None and pending.reply.raw == raw
        assert pending.reply.result is Result.LOCAL_ERROR
    assert not ctx.sent


@pytest.mark.parametrize("seed", [0, 1, 99])
def test_random_route_draws_from_the_context_rng(seed: int) -> None:
    route = RandomRoute(tuple(dest(i) for i in range(4)))
    ctx = FakeContext(seed=seed)
    for _ in range(200):
        route.route(parse(b"get k\r\n"), ctx)
    drawn = [SERVERS.index(sent.server) for sent in ctx.sent]
    same_seed = random.Random(seed)
    assert drawn == [same_seed.randrange(4) for _ in range(200)]
    assert set(drawn) == {0, 1, 2, 3}


def test_random_route_never_routes_a_multiget_whole() -> None:
    ctx = FakeContext()
    assert RandomRoute((dest(0), dest(1))).route_whole(parse(b"get a b\r\n"), ctx, no_split) is None
    assert not ctx.sent
