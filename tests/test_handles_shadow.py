"""Shadows and rate limits in memory: ShadowRoute, PoolRoute `shadows`/`rates`, RateLimitRoute."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from handle_helpers import HIT, MISS, STORED, destinations, port_of, request, server

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing import make_selector
from mcrouter_trio.hashing._furc import ch3
from mcrouter_trio.routing import PoolSpec, Route
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.hash import PoolRoute
from mcrouter_trio.routing.handles.rate_limit import RateLimitRoute, RateLimits
from mcrouter_trio.routing.handles.shadow import ShadowedRoute, ShadowSpec, shadowed
from mcrouter_trio.routing.testing import FakeContext

SHADOW = DestinationRoute(server(99))


def _shadowed_keys(spec: ShadowSpec, keys: list[str]) -> list[int]:
    """Indices of `keys` whose requests a child shadowed by `spec` copies to the shadow."""
    (child,) = destinations(1)
    route = ShadowedRoute(child, (spec,))
    copied = []
    for index, key in enumerate(keys):
        ctx = FakeContext()
        route.route(request(b"get %s\r\n" % key.encode()), ctx)
        if any(port_of(sent) == 99 for sent in ctx.sent):
            copied.append(index)
    return copied


# mcrouter's test_shadow.py: which of the keys a key_fraction_range shadows.
FRACTION_ROWS = [
    pytest.param("f", (0.0, 0.1), [5, 7, 13, 33, 43, 46, 58, 71, 83, 85, 89, 91, 93], id="f-0-0.1"),
    pytest.param("reg_f", (0.0, 0.1), [20, 30, 39, 57, 69, 71], id="reg_f-0-0.1"),
    pytest.param("b_migrate", (0.0, 0.1), [26, 30, 39, 63], id="b_migrate-0-0.1"),
    pytest.param("f", (0.4, 0.5), [9, 10, 20, 26, 32, 34, 42, 47, 54, 63, 64, 98], id="f-0.4-0.5"),
]  # fmt: skip


@pytest.mark.parametrize(("prefix", "fraction", "expected"), FRACTION_ROWS)
def test_key_fraction_range_picks_mcrouters_keys(
    prefix: str, fraction: tuple[float, float], expected: list[int]
) -> None:
    spec = ShadowSpec(SHADOW, index_range=(0, 1), key_fraction_range=fraction)
    assert _shadowed_keys(spec, [f"{prefix}{i}" for i in range(100)]) == expected


def test_keys_to_shadow_copies_exactly_those_routing_keys() -> None:
    spec = ShadowSpec(SHADOW, keys_to_shadow=frozenset({b"f101", b"f105"}))
    keys = ["f100", "f101", "/a/b/f105", "f105|#|tail", "f1050"]
    assert _shadowed_keys(spec, keys) == [1, 2, 3]


def test_requests_fraction_samples_with_the_proxys_random_numbers() -> None:
    spec = ShadowSpec(SHADOW, index_range=(0, 1), key_fraction_range=(0.0, 1.0),
                      requests_fraction=0.25)  # fmt: skip
    (child,) = destinations(1)
    route = ShadowedRoute(child, (spec,))
    ctx = FakeContext(seed=7)
    for _ in range(1000):
        route.route(request(b"get k\r\n"), ctx)
    copies = sum(port_of(sent) == 99 for sent in ctx.sent)
    expected_rng = FakeContext(seed=7).rng
    assert copies == sum(expected_rng.random() < 0.25 for _ in range(1000))
    assert 150 < copies < 350


# (index_range, keys_to_shadow, which of 4 slots are wrapped)
SLOT_ROWS = [
    pytest.param((0, 0), frozenset(), [], id="default-none"),
    pytest.param((0, 2), frozenset(), [0, 1], id="end-exclusive"),
    pytest.param((1, 4), frozenset(), [1, 2, 3], id="middle-to-end"),
    pytest.param((3, 10), frozenset(), [3], id="past-the-end"),
    pytest.param((0, 0), frozenset({b"k"}), [0, 1, 2, 3], id="keys-every-slot"),
]  # fmt: skip


@pytest.mark.parametrize(("index_range", "keys", "slots"), SLOT_ROWS)
def test_index_range_chooses_the_shadowed_slots(
    index_range: tuple[int, int], keys: frozenset[bytes], slots: list[int]
) -> None:
    spec = ShadowSpec(SHADOW, index_range=index_range, keys_to_shadow=keys)
    routes = shadowed(destinations(4), (spec,))
    assert [i for i, route in enumerate(routes) if isinstance(route, ShadowedRoute)] == slots


def test_the_client_gets_the_normal_reply_and_the_shadow_runs_in_the_background() -> None:
    spec = ShadowSpec(SHADOW, index_range=(0, 1), key_fraction_range=(0.0, 1.0))
    (child,) = destinations(1)
    ctx = FakeContext()
    pending = ShadowedRoute(child, (spec,)).route(request(b"set k 0 0 1\r\nv\r\n"), ctx)
    normal, copy = ctx.sent
    assert (port_of(normal), port_of(copy)) == (1, 99)
    assert copy.request is normal.request  # an exact copy
    assert ctx.background.in_flight == 1
    normal.answer(STORED)
    assert pending.reply is STORED  # the shadow has not answered: the client does not wait
    copy.answer(MISS)
    assert ctx.background.in_flight == 0


def test_shadow_requests_in_flight_are_capped() -> None:
    spec = ShadowSpec(SHADOW, index_range=(0, 1), key_fraction_range=(0.0, 1.0))
    (child,) = destinations(1)
    ctx = FakeContext(background_cap=2)
    route = ShadowedRoute(child, (spec,))
    for _ in range(4):
        route.route(request(b"get k\r\n"), ctx)
    assert [port_of(sent) for sent in ctx.sent] == [1, 99, 1, 99, 1, 1]
    assert ctx.background.dropped == 2


def test_pool_route_shadows_only_the_covered_servers() -> None:
    pool = PoolSpec("A", tuple(server(port) for port in (1, 2)))
    shadow = ShadowSpec(SHADOW, index_range=(1, 2), key_fraction_range=(0.0, 1.0))
    route = PoolRoute(pool, shadows=(shadow,))
    by_server: dict[int, list[int]] = {1: [], 2: []}
    for i in range(40):
        ctx = FakeContext()
        route.route(request(b"get key%d\r\n" % i), ctx)
        by_server[port_of(ctx.sent[0])].append(len(ctx.sent))
    assert set(by_server[1]) == {1} and set(by_server[2]) == {2}


def _load(route: object, *, pools: Mapping[str, object] | None = None) -> Route:
    config = {"pools": pools or {"A": {"servers": ["127.0.0.1:1"]},
                                 "S": {"servers": ["127.0.0.1:99"]}},
              "route": route}  # fmt: skip
    return load_config(json.dumps(config)).route


def test_shadow_route_in_a_list_shadows_each_child_by_slot() -> None:
    pools = {"A": {"servers": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]},
             "S": {"servers": ["127.0.0.1:99"]}}  # fmt: skip
    route = _load({"type": "AllSyncRoute", "children": [
        {"type": "ShadowRoute", "children": "Pool|A",
         "shadows": [{"target": "PoolRoute|S", "index_range": [1, 3],
                      "key_fraction_range": [0, 1]}]}]}, pools=pools)  # fmt: skip
    ctx = FakeContext()
    route.route(request(b"delete k\r\n"), ctx)
    assert sorted(port_of(sent) for sent in ctx.sent) == [1, 2, 3, 99, 99]


def test_shadow_route_where_one_route_is_expected_is_its_one_child() -> None:
    route = _load({"type": "ShadowRoute", "children": ["PoolRoute|A"],
                   "shadows": [{"target": "PoolRoute|S", "keys_to_shadow": ["k"]}]})  # fmt: skip
    ctx = FakeContext()
    route.route(request(b"get k\r\n"), ctx)
    route.route(request(b"get other\r\n"), ctx)
    assert [port_of(sent) for sent in ctx.sent] == [1, 99, 1]


BAD_SHADOWS = [
    pytest.param({"type": "ShadowRoute", "children": "PoolRoute|A|", "shadows": []},
                 "unknown pool 'A|' @ $.route.children", id="bad-child"),
    pytest.param({"type": "ShadowRoute", "children": ["PoolRoute|A", "PoolRoute|S"],
                  "shadows": []}, "2 RouteHandles in list, expected 1 @ $.route", id="two-for-one"),
    pytest.param({"type": "PoolRoute", "pool": "A", "shadow_policy": "copy", "shadows": []},
                 "Invalid shadow policy: copy @ $.route.shadow_policy", id="policy"),
    pytest.param({"type": "PoolRoute", "pool": "A", "rates": {"gets_rate": 0}},
                 "gets_rate is nonpositive @ $.route.rates", id="rate-zero"),
    pytest.param({"type": "PoolRoute", "pool": "A", "rates": {"sets_rate": "9"}},
                 "sets_rate is not a number @ $.route.rates", id="rate-string"),
    pytest.param({"type": "RateLimitRoute", "target": "PoolRoute|A",
                  "rates": {"gets_rate": 1, "gets_burst": -1}},
                 "gets_burst is nonpositive @ $.route.rates", id="burst-negative"),
    pytest.param({"type": "RateLimitRoute", "target": "PoolRoute|A"},
                 "required field missing @ $.route.rates", id="rates-required"),
]  # fmt: skip


GOOD_SHADOW = {"target": "PoolRoute|S", "keys_to_shadow": ["k"]}
BROKEN_SHADOWS = [
    pytest.param("x", 'expected a shadow object, got "x" @ shadows[0]', id="not-an-object"),
    pytest.param({"index_range": [0, 1]}, "required field missing @ shadows[0].target",
                 id="no-target"),
    pytest.param({"target": "PoolRoute|S", "index_range": [2, 1]},
                 "index_range start > end @ shadows[0].index_range", id="start-after-end"),
    pytest.param({"target": "PoolRoute|S", "index_range": [0]},
                 "index_range size is not 2 @ shadows[0].index_range", id="index-range-size"),
    pytest.param({"target": "PoolRoute|S", "key_fraction_range": [-1, 15]},
                 "invalid key_fraction_range [-1, 15] @ shadows[0].key_fraction_range",
                 id="fraction-out-of-range"),
    pytest.param({"target": "PoolRoute|S", "keys_to_shadow": ["k"], "key_fraction_range": [0, 1]},
                 "Cannot mix nonempty keys_to_shadow array with index_range, key_fraction_range,"
                 " or key_fraction_range_rv @ shadows[0]", id="keys-and-range"),
    pytest.param({"target": "do_not_exist", "index_range": [0, 1]},
                 "unknown route type 'do_not_exist' @ shadows[0].target", id="unknown-target"),
]  # fmt: skip


@pytest.mark.parametrize(("shadow", "message"), BROKEN_SHADOWS)
def test_a_broken_shadow_is_skipped_with_a_warning_as_mcrouter_does(
    shadow: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    route = _load({"type": "PoolRoute", "pool": "A", "shadows": [shadow, GOOD_SHADOW]})
    assert isinstance(route, PoolRoute)
    assert route.shadows == (_load({"type": "PoolRoute", "pool": "A",
                                    "shadows": [GOOD_SHADOW]}).shadows)  # type: ignore[attr-defined]  # fmt: skip
    assert f"ignoring a broken shadow, as mcrouter does: {message}" in caplog.messages
    ctx = FakeContext()
    route.route(request(b"get k\r\n"), ctx)
    assert [port_of(sent) for sent in ctx.sent] == [1, 99]  # the good shadow still copies


def test_shadows_that_are_no_array_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    route = _load({"type": "PoolRoute", "pool": "A", "shadows": 1})
    assert route.shadows == ()  # type: ignore[attr-defined]
    assert "ignoring 'shadows': expected an array, got 1" in caplog.messages


@pytest.mark.parametrize(("route", "message"), BAD_SHADOWS)
def test_bad_shadow_and_rate_configs(route: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(route)
    assert message in str(caught.value)


# -- rate limits ---------------------------------------------------------------

# (rates, commands sent at t=0, which went through)
RATE_ROWS = [
    pytest.param({"gets_rate": 2}, ["get"] * 3, [True, True, False], id="burst-defaults-to-rate"),
    pytest.param({"gets_rate": 1, "gets_burst": 3}, ["get"] * 4, [True] * 3 + [False],
                 id="burst"),
    pytest.param({"gets_rate": 1}, ["get", "gets", "mg"], [True, False, False],
                 id="get-like-share-a-bucket"),
    pytest.param({"gets_rate": 1}, ["set", "set", "delete", "incr"], [True] * 4,
                 id="only-limited-classes"),
    pytest.param({"sets_rate": 1}, ["set", "add", "ms", "get"], [True, False, False, True],
                 id="update-like"),
    pytest.param({"deletes_rate": 1}, ["delete", "md", "set"], [True, False, True],
                 id="delete-like"),
    pytest.param({"gets_rate": 1, "sets_rate": 1}, ["get", "set", "get"], [True, True, False],
                 id="a-bucket-per-class"),
]  # fmt: skip

WIRE = {
    "get": b"get k\r\n", "gets": b"gets k\r\n", "mg": b"mg k v\r\n",
    "set": b"set k 0 0 1\r\nv\r\n", "add": b"add k 0 0 1\r\nv\r\n", "ms": b"ms k 1\r\nv\r\n",
    "delete": b"delete k\r\n", "md": b"md k\r\n", "incr": b"incr k 1\r\n",
}  # fmt: skip


@pytest.mark.parametrize(("rates", "commands", "passed"), RATE_ROWS)
def test_rate_limit_route_token_buckets(
    rates: dict[str, float], commands: list[str], passed: list[bool]
) -> None:
    (target,) = destinations(1)
    route = RateLimitRoute(target, RateLimits.parse(rates))
    ctx = FakeContext()
    through = []
    for command in commands:
        before = len(ctx.sent)
        route.route(request(WIRE[command]), ctx)
        through.append(len(ctx.sent) > before)
    assert through == passed


def test_buckets_refill_at_the_rate_up_to_the_burst() -> None:
    (target,) = destinations(1)
    route = RateLimitRoute(target, RateLimits.parse({"gets_rate": 2, "gets_burst": 2}))
    ctx = FakeContext()
    get = request(b"get k\r\n")

    def sent_now(count: int) -> int:
        before = len(ctx.sent)
        for _ in range(count):
            route.route(get, ctx)
        return len(ctx.sent) - before

    assert sent_now(3) == 2
    ctx.advance(0.5)  # one token back
    assert sent_now(2) == 1
    ctx.advance(100)  # never more than the burst
    assert sent_now(5) == 2


def test_over_the_limit_goes_to_the_fallback_else_the_default_reply() -> None:
    target, fallback = destinations(2)
    rates = {"sets_rate": 1}
    set_k = request(b"set k 0 0 1\r\nv\r\n")
    with_fallback = RateLimitRoute(target, RateLimits.parse(rates), fallback)
    ctx = FakeContext()
    with_fallback.route(set_k, ctx)
    with_fallback.route(set_k, ctx)
    assert [port_of(sent) for sent in ctx.sent] == [1, 2]
    without = RateLimitRoute(target, RateLimits.parse(rates))
    ctx = FakeContext()
    without.route(set_k, ctx)
    refused = without.route(set_k, ctx)
    assert len(ctx.sent) == 1
    assert refused.reply is not None and refused.reply.raw == b"NOT_STORED\r\n"


def test_pool_route_rates_answer_the_default_reply_over_the_limit() -> None:
    route = _load({"type": "PoolRoute", "pool": "A", "rates": {"gets_rate": 1}})
    ctx = FakeContext()
    first = route.route(request(b"get k\r\n"), ctx)
    second = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[0].answer(HIT)
    assert first.reply is HIT
    assert second.reply is not None and second.reply.raw == b"END\r\n"
    assert len(ctx.sent) == 1


# -- bucketize -------------------------------------------------------------------


def _bucketized(total: int, **options: object) -> Route:
    pools = {"A": {"servers": [f"127.0.0.1:{port}" for port in (1, 2, 3)]},
             "S": {"servers": ["127.0.0.1:99"]}}  # fmt: skip
    route = {"type": "PoolRoute", "pool": "A", "bucketize": True, "total_buckets": total,
             "bucketization_keyspace": "space", **options}  # fmt: skip
    return _load(route, pools=pools)


def test_a_bucketized_pool_hashes_the_bucket_number() -> None:
    route = _bucketized(1000)
    select = make_selector("Ch3", 3)
    for i in range(50):
        key = b"key%d" % i
        ctx = FakeContext()
        route.route(request(b"get /a/b/" + key + b"|#|x\r\n"), ctx)
        assert port_of(ctx.sent[0]) == select(b"%d" % ch3(key, 1000)) + 1


def test_one_bucket_puts_every_key_on_one_server() -> None:
    route = _bucketized(1, hash={"hash_func": "Ch3", "salt": "s"})
    ports = set()
    for i in range(30):
        ctx = FakeContext()
        route.route(request(b"get key%d\r\n" % i), ctx)
        ports.add(port_of(ctx.sent[0]))
    assert ports == {make_selector("Ch3", 3, salt=b"s")(b"0") + 1}


@pytest.mark.parametrize(
    ("fraction", "shadowed_buckets"),
    [([0, 0.5], range(5)), ([0.5, 1], range(4, 10)), (None, range(0))],
)
def test_bucketized_shadows_take_key_fractions_as_bucket_ranges(
    fraction: list[float] | None, shadowed_buckets: range
) -> None:
    shadow: dict[str, object] = {"target": "PoolRoute|S", "index_range": [0, 3]}
    if fraction is not None:
        shadow["key_fraction_range"] = fraction
    route = _bucketized(10, shadows=[shadow])
    for i in range(60):
        key = b"key%d" % i
        ctx = FakeContext()
        route.route(request(b"get " + key + b"\r\n"), ctx)
        copied = any(port_of(sent) == 99 for sent in ctx.sent)
        assert copied == (ch3(key, 10) in shadowed_buckets)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bucketize": True, "bucketization_keyspace": "s"},
         "McBucketRoute: no total number of buckets @ $.route"),
        ({"bucketize": True, "total_buckets": 10},
         "McBucketRoute: must have bucketization_keyspace @ $.route"),
        ({"bucketize": True, "total_buckets": 0, "bucketization_keyspace": "s"},
         "got 0 @ $.route.total_buckets"),
    ],
)  # fmt: skip
def test_bad_bucketize_configs(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load({"type": "PoolRoute", "pool": "A", **options})
    assert message in str(caught.value)


def test_salted_failover_route_passes_its_shadows_to_its_pool_route() -> None:
    route = _load({"type": "SaltedFailoverRoute", "pool": "A",
                   "shadows": [{"target": "PoolRoute|S", "keys_to_shadow": ["k"]}]})  # fmt: skip
    ctx = FakeContext()
    route.route(request(b"get k\r\n"), ctx)
    assert sorted(port_of(sent) for sent in ctx.sent) == [1, 99]
