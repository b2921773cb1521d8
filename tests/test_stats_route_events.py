"""mcrouter's stats of rarer routing events, in memory and end to end.

`dev_null_requests` (DevNullRoute, not NullRoute), `before_latency_injected` and
`after_latency_injected` (LatencyInjectionRoute), `num_fail_open_state_entered` and
`_exited` (a pool's `tko_tracker`), and DeterministicOrderPolicy's
`failover_num_collisions`, counted when a failover runs out as mcrouter counts them.
Its failed-domain collisions are checked end to end against mcrouter's own numbers
in `test_mcrouter_pytests_failover.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import Memcached, Proxy, connect, free_port, pool_config
from handle_helpers import HIT, STORED, TIMEOUT, TKO, destinations, request
from test_metrics import samples

from mcrouter_trio.counters import PROXY_STATS, Group, ProxyCounters
from mcrouter_trio.hashing import ch3
from mcrouter_trio.messages import Reply
from mcrouter_trio.routing import REGISTRY, load_handles
from mcrouter_trio.routing._specs import TkoLimitSpec
from mcrouter_trio.routing.handles._failover_settings import parse_failover_policy
from mcrouter_trio.routing.handles.failover import FailoverRoute
from mcrouter_trio.routing.handles.simple import LatencyInjectionRoute
from mcrouter_trio.routing.testing import FakeContext
from mcrouter_trio.upstream._health import PoolTkoLimit

ProxyFactory = Callable[..., Proxy]

load_handles()

# -- DevNullRoute ----------------------------------------------------------------------

DEV_NULL_ROWS = [
    # (route type, the client's command, routed whole (a multi-get), requests counted)
    ("DevNullRoute", b"get k\r\n", False, 1),
    ("DevNullRoute", b"set k 0 0 1\r\nv\r\n", False, 1),
    ("DevNullRoute", b"get a b c\r\n", True, 3),  # mcrouter routes each key on its own
    ("NullRoute", b"get k\r\n", False, 0),
    ("NullRoute", b"get a b c\r\n", True, 0),
]


@pytest.mark.parametrize(("kind", "wire", "whole", "counted"), DEV_NULL_ROWS)
def test_dev_null_counts_what_it_swallows_and_null_route_nothing(
    kind: str, wire: bytes, whole: bool, counted: int
) -> None:
    route = REGISTRY[kind].cls()
    ctx = FakeContext()
    sent = request(wire)
    if whole:
        pending = route.route_whole(sent, ctx, lambda _route, _request: pytest.fail("split"))
    else:
        pending = route.route(sent, ctx)
    assert pending is not None and pending.reply is not None and pending.reply.is_error is False
    assert ctx.counters.dev_null_requests == counted


# -- LatencyInjectionRoute --------------------------------------------------------------

LATENCY_ROWS = [
    # (before, after, total ms; then before_/after_/total_latency_injected per request)
    pytest.param(50, 0, 0, (1, 0, 0), id="before"),
    pytest.param(0, 30, 0, (0, 1, 0), id="after"),
    pytest.param(50, 30, 0, (1, 1, 0), id="both"),
    pytest.param(0, 0, 100, (0, 0, 1), id="total-pads"),
    pytest.param(20, 100, 50, (1, 1, 0), id="total-shorter-than-after"),
    pytest.param(-5, -5, 30, (0, 0, 1), id="negative-is-none"),
]


@pytest.mark.parametrize(("before", "after", "total", "counted"), LATENCY_ROWS)
def test_latency_injection_counts_each_delay_it_injects(
    before: int, after: int, total: int, counted: tuple[int, int, int]
) -> None:
    (child,) = destinations(1)
    ctx = FakeContext()
    route = LatencyInjectionRoute(child, before, after, total)
    for requests in (1, 2):
        pending = route.route(request(b"get k\r\n"), ctx)
        ctx.advance(max(before, 0) / 1000)  # the child answers as soon as it is sent
        ctx.sent[-1].answer(STORED)
        ctx.advance(1.0)
        assert pending.reply is STORED
        got = (
            ctx.counters.before_latency_injected,
            ctx.counters.after_latency_injected,
            ctx.counters.total_latency_injected,
        )
        assert got == tuple(count * requests for count in counted)


# -- a pool's tko_tracker ---------------------------------------------------------------

FAIL_OPEN_ROWS = [
    # (upper, lower, steps: "+" a server fails, "-" a counted one recovers; entered, exited)
    (1, 1, "++", 1, 0),
    (1, 1, "+++-", 1, 1),
    (2, 1, "+++-+-+", 1, 1),  # still open after the first recovery, closed at the second
    (1, 1, "++-++-", 2, 2),
    (3, 3, "++-+", 0, 0),
]


@pytest.mark.parametrize(("upper", "lower", "steps", "entered", "exited"), FAIL_OPEN_ROWS)
def test_fail_open_is_counted_each_time_it_starts_and_ends(
    upper: int, lower: int, steps: str, entered: int, exited: int
) -> None:
    counters = ProxyCounters()
    limit = PoolTkoLimit("A", TkoLimitSpec(upper, lower), counters)
    for step in steps:
        if step == "+":
            limit.admit("127.0.0.1:1")
        else:
            limit.release()
    assert counters.num_fail_open_state_entered == entered
    assert counters.num_fail_open_state_exited == exited


# -- DeterministicOrderPolicy's collisions -------------------------------------------------

CHILDREN = 4


def collisions_until(key: bytes, position: int) -> int:
    """mcrouter's count for the draws of positions 1 to `position`: each next salt's Ch3
    pick that is a child already taken (child 0 is taken from the start)."""
    taken = {0}
    salt = 1
    collisions = 0
    for _ in range(position):
        while True:
            salt += 1
            pick = ch3(key + str(salt).encode(), CHILDREN)
            if pick not in taken:
                break
            collisions += 1
        taken.add(pick)
    return collisions


#: A key whose draws collide (found, not assumed): the rows below then count something.
KEY = next(
    key
    for key in (b"k%d" % i for i in range(1000))
    if 0 < collisions_until(key, 1) < collisions_until(key, 2) < collisions_until(key, 3)
)

COLLISION_ROWS = [
    # (max_error_tries, the children's replies, up to which position the draws count;
    #  None: the failover did not run out, nothing is counted)
    pytest.param(2, [HIT], None, id="no-failover"),
    pytest.param(2, [TIMEOUT, HIT], None, id="answered-before-running-out"),
    pytest.param(2, [TKO, TKO, HIT], None, id="tko-is-no-try"),
    pytest.param(2, [TIMEOUT, TIMEOUT], 2, id="error-tries-spent-the-next-is-drawn"),
    pytest.param(1, [TIMEOUT], 1, id="one-error-try"),
    pytest.param(2, [TKO, TKO, TKO, HIT], 3, id="the-last-child-answers"),
    pytest.param(4, [TKO, TIMEOUT, TKO, TIMEOUT], 3, id="the-last-child-fails"),
]


@pytest.mark.parametrize(("error_tries", "replies", "until"), COLLISION_ROWS)
def test_collisions_are_counted_when_the_failover_runs_out(
    error_tries: int, replies: list[Reply], until: int | None
) -> None:
    policy = parse_failover_policy(
        {
            "type": "DeterministicOrderPolicy",
            "max_tries": CHILDREN,
            "max_error_tries": error_tries,
            "ignore_normal_reply_index": True,
        }
    )
    route = FailoverRoute(destinations(CHILDREN), failover_policy=policy)
    ctx = FakeContext()
    pending = route.route(request(b"get " + KEY + b"\r\n"), ctx)
    for index, reply in enumerate(replies):
        ctx.sent[index].answer(reply)
    assert pending.reply == replies[-1]
    assert len(ctx.sent) == len(replies)
    expected = 0 if until is None else collisions_until(KEY, until)
    assert ctx.counters.failover_num_collisions == expected
    assert ctx.counters.failover_num_failed_domain_collisions == 0


def test_the_new_stats_keep_mcrouter_s_groups() -> None:
    groups = {stat.name: stat.groups for stat in PROXY_STATS}
    assert groups["dev_null_requests"] == Group.DETAILED
    for name in ("before_latency_injected", "after_latency_injected"):
        assert groups[name] == groups["total_latency_injected"]
    for name in ("failover_num_collisions", "failover_num_failed_domain_collisions"):
        assert groups[name] == Group.ODS | Group.COUNT
    for name in ("num_fail_open_state_entered", "num_fail_open_state_exited"):
        assert groups[name] == groups["num_connections_opened"]


# -- end to end ---------------------------------------------------------------------------


def stats_of(port: int, group: str) -> dict[str, str]:
    with connect(port) as client:
        raw = client.call(f"stats {group}\r\n".encode(), b"END\r\n").decode()
    return {
        parts[1]: parts[2] for line in raw.split("\r\n") if len(parts := line.split(None, 2)) == 3
    }


def test_dev_null_requests_end_to_end(proxy_factory: ProxyFactory) -> None:
    config = {"pools": {}, "route": {"type": "PrefixSelectorRoute", "policies": {
        "null:": "NullRoute"}, "wildcard": "DevNullRoute"}}  # fmt: skip
    proxy = proxy_factory(json.dumps(config))
    with connect(proxy.port) as client:
        assert client.call(b"get a b c\r\n") == b"END\r\n"
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"NOT_STORED\r\n"
        assert client.call(b"get null:k\r\n") == b"END\r\n"
    assert stats_of(proxy.port, "detailed")["dev_null_requests"] == "4"
    assert "dev_null_requests" not in stats_of(proxy.port, "")


def test_latency_injected_end_to_end(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    """`stats` shows these per second (mcrouter's RATE group): the metrics, the counts."""
    config = pool_config(f"127.0.0.1:{memcached.port}")
    config["route"] = {"type": "LatencyInjectionRoute", "child": config["route"],
                       "before_latency_ms": 1, "after_latency_ms": 1}  # fmt: skip
    metrics_port = free_port()
    proxy = proxy_factory(
        config, "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"
    )
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
    scraped = samples(metrics_port)
    counts = [
        scraped[(f"mcrouter_{name}_latency_injected_total", ())]
        for name in ("before", "after", "total")
    ]
    assert counts == [2, 2, 0]
    assert float(stats_of(proxy.port, "all")["before_latency_injected"]) > 0


def test_the_reply_that_spends_the_last_error_try_counts_as_mcrouter_weighs_it() -> None:
    """mcrouter's `processReply` counts each error reply it weighs, the last try's too."""
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": CHILDREN, "max_error_tries": 2}
    )
    route = FailoverRoute(destinations(CHILDREN), failover_policy=policy)
    ctx = FakeContext()
    pending = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[0].answer(TIMEOUT)
    ctx.sent[1].answer(TIMEOUT)
    assert pending.reply == TIMEOUT and len(ctx.sent) == 2
    assert ctx.counters.failover_policy_result_error == 2
    assert ctx.counters.failover_all_failed_count == 0  # children were left, as in mcrouter
