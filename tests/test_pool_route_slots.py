"""Route objects in a pool's `servers` (mcrouter builds each as a route, in its place), in memory.

A route slot holds its position: hashes and weights count it, so no key moves when
a dead host's entry becomes an ErrorRoute. Connections, spooling and ejection are
for servers only. The end-to-end replay of mcrouter's test is in
test_mcrouter_configs.py (`test_pool_server_errors`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_asynclog_format import RecordingSpool

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.config._loader import ProxyConfig
from mcrouter_trio.downstream._admin import _pool_names
from mcrouter_trio.hashing._selector import make_selector
from mcrouter_trio.messages import Op, Reply, Request, Result
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.hash import PoolRoute
from mcrouter_trio.routing.handles.simple import ErrorRoute, NullRoute
from mcrouter_trio.routing.testing import FakeContext

KEYS = [b"key:%d" % i for i in range(300)]
S1, S2, S3 = (ServerSpec("127.0.0.1", port) for port in (11001, 11002, 11003))
MISS = Reply(Result.NOTFOUND, b"END\r\n")


def load(pools: dict[str, Any], route: object = "PoolRoute|B") -> ProxyConfig:
    return load_config(json.dumps({"pools": pools, "route": route}))


def refusal(pools: dict[str, Any], route: object = "PoolRoute|B") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(pools, route)
    return info.value.errors


def get(key: bytes) -> Request:
    return Request(Op.GET, key, (key,))


def delete(key: bytes) -> Request:
    return Request(Op.DELETE, key)


# (the pool's `servers` list, its slots as built)
BUILD_CASES = [
    (["127.0.0.1:11001"], (S1,)),
    ([{"type": "ErrorRoute"}], (ErrorRoute(),)),
    (
        ["127.0.0.1:11001", {"type": "ErrorRoute"}, "127.0.0.1:11003"],
        (S1, ErrorRoute(), S3),
    ),
    (
        [{"type": "NullRoute"}, "127.0.0.1:11002"],
        (NullRoute(), S2),
    ),
    (
        ["127.0.0.1:11001", "127.0.0.1:11002", {"type": "ErrorRoute", "response": "gone"}],
        (S1, S2, ErrorRoute("gone")),
    ),
]


@pytest.mark.parametrize(("servers", "slots"), BUILD_CASES)
def test_pool_slots_keep_list_order(servers: list[object], slots: tuple[object, ...]) -> None:
    pool = load({"B": {"servers": servers}}).pools["B"]
    assert pool.slots == slots
    assert pool.servers == tuple(slot for slot in slots if isinstance(slot, ServerSpec))


def test_a_route_slot_may_name_a_pool_defined_further_down() -> None:
    config = load(
        {
            "B": {"servers": ["127.0.0.1:11001", {"type": "PoolRoute", "pool": "C"}]},
            "C": {"servers": ["127.0.0.1:11003"]},
        }
    )
    slot = config.pools["B"].slots[1]
    assert isinstance(slot, PoolRoute) and slot.pool == config.pools["C"]
    assert list(config.pools) == ["B", "C"]  # config order, whatever was built first
    assert config.servers == {S1, S3}


# (pools, route, the errors): each names its JSON path
ERROR_CASES = [
    (
        {"B": {"servers": ["127.0.0.1:11001", {"type": "NoSuchRoute"}]}},
        "PoolRoute|B",
        ["unknown route type 'NoSuchRoute' @ $.pools.B.servers[1]"],
    ),
    (
        {"B": {"servers": [{"response": "x"}]}},
        "PoolRoute|B",
        ["required field missing @ $.pools.B.servers[0].type"],
    ),
    (
        {"B": {"servers": ["127.0.0.1:11001", {"type": "PoolRoute", "pool": "B"}]}},
        "PoolRoute|B",
        ["pool 'B' has a route slot that routes to the pool itself @ $.pools.B.servers[1].pool"],
    ),
    (
        # A broken slot of an inherited list is reported once, where it is written.
        {
            "P": {"servers": [{"type": "ErrorRoute", "result": "nope"}]},
            "B": {"inherit": "P"},
        },
        "PoolRoute|B",
        ["result nope is not a valid error result @ $.pools.P.servers[0].result"],
    ),
    (
        {},
        {"type": "PoolRoute", "pool": {"name": "X", "servers": ["127.0.0.1:1", {"type": 3}]}},
        ["expected a string, got 3 @ $.route.pool.servers[1].type"],
    ),
    (
        {"B": {"servers": ["127.0.0.1:11001", {"type": "ErrorRoute"}]}},
        {"type": "PoolRoute", "pool": "B", "hash": {"hash_func": "Ketama"}},
        ["Ketama hashes over servers only, but pool 'B' has a route at servers[1] @ $.route"],
    ),
]


@pytest.mark.parametrize(("pools", "route", "errors"), ERROR_CASES)
def test_route_slot_errors_name_their_json_path(
    pools: dict[str, Any], route: object, errors: list[str]
) -> None:
    assert refusal(pools, route) == errors


def test_route_slots_count_for_hashing_and_weights() -> None:
    pools = {"B": {"servers": ["127.0.0.1:11001", {"type": "ErrorRoute"}, "127.0.0.1:11003"]}}
    route = load(pools).route
    assert isinstance(route, PoolRoute)
    ch3 = make_selector("Ch3", 3)
    assert [route.selected_index(get(key)) for key in KEYS] == [ch3(key) for key in KEYS]
    weighted = load({"B": {**pools["B"], "weights": [1.0, 0.5, 0.25]}}).route
    wch3 = make_selector("WeightedCh3", 3, weights=(1.0, 0.5, 0.25))
    assert isinstance(weighted, PoolRoute)
    assert [weighted.selected_index(get(key)) for key in KEYS] == [wch3(key) for key in KEYS]


def test_keys_of_a_route_slot_get_its_reply_and_reach_no_server() -> None:
    pools = {"B": {"servers": ["127.0.0.1:11001", {"type": "ErrorRoute"}, "127.0.0.1:11003"]}}
    route = load(pools).route
    assert isinstance(route, PoolRoute)
    ctx = FakeContext(answer=lambda _server, _request: MISS)
    for key in KEYS:
        reply = route.route(get(key), ctx).reply
        assert reply is not None
        if route.selected_index(get(key)) == 1:
            assert reply.raw == b"SERVER_ERROR local error\r\n"
        else:
            assert reply == MISS
    assert {sent.server for sent in ctx.sent} == {S1, S3}
    assert len(ctx.sent) == sum(route.selected_index(get(key)) != 1 for key in KEYS)


def test_pool_string_gives_each_slot_its_route() -> None:
    pools = {"B": {"servers": ["127.0.0.1:11001", {"type": "ErrorRoute"}]}}
    route = load(pools, {"type": "HashRoute", "children": "Pool|B"}).route
    assert route.targets() == (DestinationRoute(S1), ErrorRoute())


def test_a_route_slot_failing_a_delete_is_not_spooled() -> None:
    slot = {"type": "ErrorRoute", "result": "mc_res_connect_error"}
    route = load({"B": {"servers": ["127.0.0.1:11001", slot]}}).route
    assert isinstance(route, PoolRoute)
    ctx = FakeContext(answer=lambda _server, _request: Reply(Result.CONNECT_ERROR, b"x\r\n"))
    spool = RecordingSpool()
    ctx.asynclog = spool
    spooled_keys = []
    for key in KEYS[:40]:
        reply = route.route(delete(key), ctx).reply
        if route.selected_index(delete(key)) == 1:
            assert reply is not None and reply.raw == b"SERVER_ERROR connection error\r\n"
        else:
            assert reply is None  # waiting for the spool
            spooled_keys.append(key)
    assert spooled_keys
    assert [(server, key) for server, key, _pool, _reply in spool.spooled] == [
        (S1, key) for key in spooled_keys
    ]


def test_a_route_slot_is_never_ejected() -> None:
    slot = {"type": "ErrorRoute", "result": "mc_res_timeout"}
    pools = {
        "B": {
            "servers": ["127.0.0.1:11001", slot, "127.0.0.1:11003"],
            "auto_eject_hosts": True,
            "server_failure_limit": 1,
        }
    }
    route = load(pools).route
    assert isinstance(route, PoolRoute) and route.ejector is not None
    ctx = FakeContext(answer=lambda _server, _request: Reply(Result.TIMEOUT, b"x\r\n"))
    before = [route.selected_index(get(key)) for key in KEYS]
    for key in [key for key in KEYS if route.selected_index(get(key)) == 1][:5]:
        route.route(get(key), ctx)
    ctx.advance(0)
    assert route.ejector.ejected == frozenset()
    assert [route.selected_index(get(key)) for key in KEYS] == before
    # Servers are: the first one's keys go elsewhere, the route slot keeps its own.
    route.route(get(next(key for key in KEYS if route.selected_index(get(key)) == 0)), ctx)
    ctx.advance(0)
    assert route.ejector.ejected == {0}
    after = [route.selected_index(get(key)) for key in KEYS]
    assert 0 not in after
    assert [i for i, slot in enumerate(before) if slot == 1] == [
        i for i, slot in enumerate(after) if slot == 1 and before[i] == 1
    ]
    # Every server out: the full ring again, not every key on the route slot.
    route.route(get(next(key for key in KEYS if route.selected_index(get(key)) == 2)), ctx)
    ctx.advance(0)
    assert route.ejector.ejected == {0, 2}
    assert [route.selected_index(get(key)) for key in KEYS] == before


def test_failure_domains_follow_list_positions() -> None:
    pools = {
        "B": {
            "servers": [{"type": "ErrorRoute"}, "127.0.0.1:11002", "127.0.0.1:11003"],
            "failure_domains": [7, 8, 9],
        }
    }
    pool = load(pools).pools["B"]
    assert [server.failure_domain for server in pool.servers] == [8, 9]


def test_admin_pools_lists_servers_at_their_list_positions() -> None:
    pools = {"B": {"servers": ["127.0.0.1:11001", {"type": "ErrorRoute"}, "127.0.0.1:11003"]}}
    names = _pool_names(load(pools).pools)["B"]
    assert [name.split("|")[2] for name in names] == ["id=0", "id=2"]
    assert [name.split("|ap=")[1].split(":ascii")[0] for name in names] == [
        S1.address,
        S3.address,
    ]


def test_route_slot_positions_must_fit_the_pool() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        PoolSpec("B", (S1,), route_slots=((2, ErrorRoute()),))
