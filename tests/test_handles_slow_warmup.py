"""PoolRoute `slow_warmup` in memory: mcrouter's SlowWarmUpRoute rules and settings."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from handle_helpers import DELETED, HIT, MISS, NOT_FOUND, STORED, destinations, port_of, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.messages import Reply, Result
from mcrouter_trio.routing import ServerSpec
from mcrouter_trio.routing.handles._slow_warmup import SlowWarmUpRoute, SlowWarmUpSettings
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.testing import FakeContext

SERVER, SPARE = destinations(2)
#: mcrouter's SlowWarmUpRouteTest settings: enable 0.5, disable 0.9, start 0.1, step 1.
TEST_SETTINGS = SlowWarmUpSettings(0.5, 0.9, 0.1, 1.0, 5)


class Draw(random.Random):
    """An rng whose every draw is `value` (mcrouter compares a draw in [0, 1) to the share)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _answering(by_port: dict[int, Reply]) -> FakeContext:
    return FakeContext(answer=lambda server, _request: by_port[server.port])


def _warm_route(hits: int, misses: int, settings: SlowWarmUpSettings) -> SlowWarmUpRoute:
    route = SlowWarmUpRoute(SERVER, SPARE, settings)
    route.hits, route.misses = hits, misses
    return route


# (hits, misses, warming up before, min_requests) -> (warming up after, share of gets)
STATES = [
    pytest.param(0, 4, False, 5, False, 1.1, id="under-min-requests-is-warm"),
    pytest.param(1, 9, False, 5, True, 0.2, id="cold-below-enable"),
    pytest.param(5, 5, False, 5, False, 0.6, id="at-enable-is-not-below"),
    pytest.param(6, 4, False, 5, False, 0.7, id="between-thresholds-stays-warm"),
    pytest.param(6, 4, True, 5, True, 0.7, id="between-thresholds-stays-warming"),
    pytest.param(9, 1, True, 5, False, 1.0, id="at-disable-is-warm-again"),
    pytest.param(95, 5, True, 5, False, 1.05, id="above-disable-is-warm"),
]  # fmt: skip


@pytest.mark.parametrize(("hits", "misses", "before", "min_requests", "after", "share"), STATES)
def test_warming_up_uses_two_thresholds(
    hits: int, misses: int, before: bool, min_requests: int, after: bool, share: float
) -> None:
    settings = SlowWarmUpSettings(0.5, 0.9, 0.1, 1.0, min_requests)
    route = _warm_route(hits, misses, settings)
    route.enabled = before
    assert route.warming_up() is after
    assert settings.start + route.hit_rate() * settings.step == pytest.approx(share)


# (hit rate 1 in 10 -> share 0.2) a draw at or below the share reaches the server.
DRAWS = [
    pytest.param(b"get k\r\n", 0.1, 1, id="get-draw-below-share"),
    pytest.param(b"get k\r\n", 0.2, 1, id="get-draw-at-share"),
    pytest.param(b"get k\r\n", 0.21, 2, id="get-draw-above-share-spared"),
    pytest.param(b"gets k\r\n", 0.9, 2, id="gets-spared"),
    pytest.param(b"gat 0 k\r\n", 0.9, 2, id="gat-spared"),
    pytest.param(b"mg k v\r\n", 0.9, 2, id="meta-get-spared"),
    pytest.param(b"set k 0 0 1\r\nv\r\n", 0.9, 1, id="set-always-reaches"),
    pytest.param(b"delete k\r\n", 0.9, 1, id="delete-always-reaches"),
    pytest.param(b"incr k 1\r\n", 0.9, 1, id="incr-always-reaches"),
]  # fmt: skip


@pytest.mark.parametrize(("wire", "draw", "port"), DRAWS)
def test_a_cold_server_gets_a_share_of_the_gets(wire: bytes, draw: float, port: int) -> None:
    route = _warm_route(1, 9, TEST_SETTINGS)
    ctx = FakeContext()
    ctx.rng = Draw(draw)
    route.route(request(wire), ctx)
    assert [port_of(sent) for sent in ctx.sent] == [port]


# Which replies count: mcrouter's isHitResult / isMissResult.
COUNTS = [
    pytest.param(HIT, 1, 0, id="found-hit"),
    pytest.param(DELETED, 1, 0, id="deleted-hit"),
    pytest.param(Reply(Result.TOUCHED, b"TOUCHED\r\n"), 1, 0, id="touched-hit"),
    pytest.param(MISS, 0, 1, id="get-miss"),
    pytest.param(NOT_FOUND, 0, 1, id="not-found-miss"),
    pytest.param(STORED, 0, 0, id="stored-neither"),
    pytest.param(Reply(Result.TIMEOUT, b"SERVER_ERROR timeout\r\n"), 0, 0, id="error-neither"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "hits", "misses"), COUNTS)
def test_replies_counted_as_hits_and_misses(reply: Reply, hits: int, misses: int) -> None:
    route = SlowWarmUpRoute(SERVER, SPARE, TEST_SETTINGS)
    route.route(request(b"get k\r\n"), _answering({1: reply}))
    assert (route.hits, route.misses) == (hits, misses)


def test_dry_runs_are_not_counted() -> None:
    route = SlowWarmUpRoute(SERVER, SPARE, TEST_SETTINGS)
    ctx = FakeContext(answer=lambda server, _request: MISS, dry_run=True)
    route.route(request(b"get k\r\n"), ctx)
    assert (route.hits, route.misses) == (0, 0)


def _served_by(route: SlowWarmUpRoute, ctx: FakeContext, count: int) -> tuple[int, int]:
    before = len(ctx.sent)
    for _ in range(count):
        route.route(request(b"get k\r\n"), ctx)
    ports = [port_of(sent) for sent in ctx.sent[before:]]
    return ports.count(1), ports.count(2)


def test_mcrouter_basic_warm_up_sequence() -> None:
    """mcrouter's SlowWarmUpRouteTest.basic, replayed: cold, warming, warm again."""
    route = SlowWarmUpRoute(SERVER, SPARE, TEST_SETTINGS)
    ctx = _answering({1: HIT, 2: HIT})
    assert _served_by(route, ctx, 10) == (10, 0)
    misses = _answering({1: NOT_FOUND})
    for _ in range(90):  # deletes that miss: hit rate 0.1
        route.route(request(b"delete k\r\n"), misses)
    ctx.rng = random.Random(7)
    normal1, spared1 = _served_by(route, ctx, 1000)
    assert normal1 > 0 and spared1 > 0 and normal1 + spared1 == 1000
    _served_by(route, ctx, 1000)  # the hits raise the hit rate, not above 0.9
    normal2, spared2 = _served_by(route, ctx, 1000)
    assert normal2 > normal1 and spared2 < spared1
    _served_by(route, ctx, 50000)  # now above 0.9: warm again
    assert _served_by(route, ctx, 10) == (10, 0)


def test_mcrouter_min_requests_sequence() -> None:
    """mcrouter's SlowWarmUpRouteTest.minRequests: warm until 100 replies are counted."""
    route = SlowWarmUpRoute(SERVER, SPARE, SlowWarmUpSettings(0.5, 0.9, 0.1, 1.0, 100))
    misses = _answering({1: NOT_FOUND})
    for _ in range(90):
        route.route(request(b"delete k\r\n"), misses)
    ctx = _answering({1: MISS, 2: MISS})
    assert _served_by(route, ctx, 10) == (10, 0)
    normal, spared = _served_by(route, ctx, 50)
    assert spared > 0 and normal + spared == 50


def _pool_config(slow_warmup: object, servers: int = 1) -> str:
    return json.dumps(
        {
            "pools": {"A": {"servers": [f"127.0.0.1:{port}" for port in range(1, servers + 1)]}},
            "route": {"type": "PoolRoute", "pool": "A", "slow_warmup": slow_warmup},
        }
    )


def test_each_server_of_the_pool_warms_up_on_its_own() -> None:
    config = load_config(
        _pool_config({"failoverTarget": "NullRoute", "settings": {
            "enable_threshold": 0.5, "disable_threshold": 0.9, "min_requests": 10}}, servers=2)
    )  # fmt: skip
    pool: Any = config.route
    ctx = FakeContext(answer=lambda server, _request: MISS if server.port == 1 else HIT)
    keys: dict[int, bytes] = {}
    for index in range(100):
        key = b"key%d" % index
        keys.setdefault(pool.selected_index(request(b"get " + key + b"\r\n")), key)
    cold, warm = keys[0], keys[1]
    for _ in range(20):
        pool.route(request(b"get " + cold + b"\r\n"), ctx)
        pool.route(request(b"get " + warm + b"\r\n"), ctx)
    ctx.rng = Draw(0.5)  # above the cold server's share (0.1), below the warm one's
    ctx.sent.clear()
    for key in (cold, warm):
        pending = pool.route(request(b"get " + key + b"\r\n"), ctx)
        assert pending.reply is not None
    assert [port_of(sent) for sent in ctx.sent] == [2]  # NullRoute answered the cold one


def test_the_failover_target_is_one_route_shared_by_the_servers() -> None:
    config = load_config(
        _pool_config({"failoverTarget": "PoolRoute|B"}, servers=3).replace(
            '"pools": {', '"pools": {"B": {"servers": ["127.0.0.1:9"]}, '
        )
    )
    servers: Any = config.route.targets()
    assert len(servers) == 3
    assert len({id(server.failover) for server in servers}) == 1
    assert servers[0].settings == SlowWarmUpSettings()
    assert [server.target for server in servers] == [
        DestinationRoute(ServerSpec("127.0.0.1", port)) for port in (1, 2, 3)
    ]


# mcrouter's SlowWarmUpRouteSettings checks, at the settings' JSON path.
SETTINGS_ERRORS = [
    ({"disable_threshold": 0.9}, "SlowWarmUpSettings: Couldn't find 'enable_threshold' in config"),
    ({"enable_threshold": "0.1", "disable_threshold": 0.9},
     "SlowWarmUpSettings: 'enable_threshold' must be a number, but was \"0.1\""),
    ({"enable_threshold": 0.1, "disable_threshold": 1.5},
     "SlowWarmUpSettings: 'disable_threshold' must be a double in [0,1] range"),
    ({"enable_threshold": 0.9, "disable_threshold": 0.9},
     "SlowWarmUpSettings: 'enable_threshold' must be strictly less than 'disable_threshold'."),
    ({"enable_threshold": 0.1, "disable_threshold": 0.9, "start": 0},
     "SlowWarmUpSettings: 'start' must be a double in (0,1) range, but was 0.0"),
    ({"enable_threshold": 0.1, "disable_threshold": 0.9, "step": 100},
     "SlowWarmUpSettings: 'step' must be in the (0,100) range, but was 100.0"),
    ({"enable_threshold": 0.1, "disable_threshold": 0.9, "min_requests": 1.0},
     "SlowWarmUpSettings: 'min_requests' must be an integer, but was 1.0"),
    ({"enable_threshold": 0.1, "disable_threshold": 0.9, "min_requests": 0},
     "SlowWarmUpSettings: 'min_requests' must be an integer greater than 0"),
    ([], "'settings' in slow_warmup must be a json object."),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "error"), SETTINGS_ERRORS)
def test_bad_settings_are_refused_at_their_path(settings: object, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_pool_config({"failoverTarget": "NullRoute", "settings": settings}))
    assert info.value.errors == [f"{error} @ $.route.slow_warmup.settings"]


@pytest.mark.parametrize(
    ("slow_warmup", "error"),
    [
        ("NullRoute", "slow_warmup must be a json object @ $.route.slow_warmup"),
        ({}, "required field missing @ $.route.slow_warmup.failoverTarget"),
    ],
)
def test_bad_slow_warmup_is_refused(slow_warmup: object, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_pool_config(slow_warmup))
    assert info.value.errors == [error]


def test_given_settings_and_defaults() -> None:
    config = load_config(
        _pool_config({"failoverTarget": "NullRoute", "settings": {
            "enable_threshold": 0.2, "disable_threshold": 0.4, "start": 0.3, "step": 2,
            "min_requests": 7}})
    )  # fmt: skip
    route: Any = config.route
    assert route.slow_warmup.settings == SlowWarmUpSettings(0.2, 0.4, 0.3, 2.0, 7)
    partial = load_config(
        _pool_config({"failoverTarget": "NullRoute", "settings": {
            "enable_threshold": 0.2, "disable_threshold": 0.4}})
    )  # fmt: skip
    partial_route: Any = partial.route
    assert partial_route.slow_warmup.settings == SlowWarmUpSettings(0.2, 0.4, 0.1, 1.0, 100)
