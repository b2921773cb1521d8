"""HostIdRoute and LatestRoute pick the children mcrouter picks on the same host.

Expected values come from a reference written here step by step from folly's
source (`folly/hash/Hash.h`: `hash_128_to_64`, `twang_mix64`, `folly::Hash` of a
string is SpookyHash V2 64 with seed 0) and mcrouter's (`HostIdRouteFactory.h`,
`LatestRoute.h` `getTargets`), not from the project's hashing modules, plus
mcrouter's own LatestRoute test vector.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from _routing import MISS, SERVERS, TIMEOUT, answer_all, dest, error, parse, server_index

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.downstream._admin import route_servers
from mcrouter_trio.hashing import weighted_ch3
from mcrouter_trio.hashing._folly import fnv64_broken, hash_128_to_64, twang_mix64
from mcrouter_trio.hashing._per_host import latest_order
from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.messages import Op, Result
from mcrouter_trio.routing import Route
from mcrouter_trio.routing.handles.failover import LatestRoute
from mcrouter_trio.routing.handles.simple import HostIdRoute
from mcrouter_trio.routing.testing import FakeContext

U64 = 2**64


def ref_hash_128_to_64(upper: int, lower: int) -> int:
    """folly::hash::hash_128_to_64, one C++ statement per line, uint64 arithmetic."""
    k_mul = 0x9DDFEA08EB382D69
    a = ((lower ^ upper) * k_mul) % U64
    a = a ^ (a >> 47)
    b = ((upper ^ a) * k_mul) % U64
    b = b ^ (b >> 47)
    return (b * k_mul) % U64


def ref_twang_mix64(key: int) -> int:
    """folly::hash::twang_mix64, one C++ statement per line, uint64 arithmetic."""
    key = ((U64 - 1 - key) + (key << 21)) % U64  # (~key) + (key << 21)
    key = key ^ (key >> 24)
    key = (key + (key << 3) + (key << 8)) % U64
    key = key ^ (key >> 14)
    key = (key + (key << 2) + (key << 4)) % U64
    key = key ^ (key >> 28)
    return (key + (key << 31)) % U64


def ref_folly_hash(number: int, text: str) -> int:
    """folly::Hash()(size_t, StringPiece): hash_sequence of the two hashes."""
    return ref_hash_128_to_64(ref_twang_mix64(number), spooky_hash64(text.encode(), 0))


def ref_latest_targets(
    host_id: int, weights: Sequence[float], count: int, salt: str, thread_id: int = 0
) -> list[int]:
    """LatestRoute.h getTargets over children 0..n-1."""
    targets, weights = list(range(len(weights))), list(weights)
    if len(targets) <= 1:
        return targets
    hash_key = ref_hash_128_to_64(0, host_id)  # hash_combine(0, hostid): std::hash is identity
    if thread_id != 0:
        hash_key = ref_hash_128_to_64(hash_key, thread_id)  # hash_combine(hashKey, threadId)
    if salt:
        hash_key = ref_folly_hash(hash_key, salt)
    failovers = []
    for i in range(min(count, len(targets))):
        picked = weighted_ch3(str(hash_key).encode(), weights)
        failovers.append(targets[picked])
        targets[picked], targets[-1] = targets[-1], targets[picked]
        targets.pop()
        weights[picked], weights[-1] = weights[-1], weights[picked]
        weights.pop()
        hash_key = ref_hash_128_to_64(hash_key, i)
    return failovers


def tried_by(route: Route, worker_index: int = 0) -> list[int]:
    """The servers a get goes to when every one of them times out."""
    ctx = FakeContext(worker_index=worker_index)
    pending = route.route(parse(b"get k\r\n"), ctx)
    assert answer_all(ctx, pending, lambda _request: TIMEOUT) is TIMEOUT
    return [server_index(ctx, i) for i in range(len(ctx.sent))]


EIGHT = tuple(dest(i) for i in range(8))
HOSTS = [0, 1, 123, 945921392, 3918636910, 2**32 - 1]


# ---------------------------------------------------------------------------
# folly's pieces


@pytest.mark.parametrize("value", [0, 1, 123, 2**32 - 1, 2**63, U64 - 1])
def test_twang_mix64_and_hash_128_to_64_are_follys(value: int) -> None:
    assert twang_mix64(value) == ref_twang_mix64(value)
    assert hash_128_to_64(value, 0x0123456789ABCDEF) == ref_hash_128_to_64(
        value, 0x0123456789ABCDEF
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # folly/hash/test/FnvHashTest.cpp, Fnv64_BROKEN (s4 is a C string: it stops at 0x00).
        (b"hello, world!", 13991426986746681734),
        (b"monkeys! m0nk3yz! ev3ry \\/\\/here~~~~", 6091394665637302478),
        (b"", 14695981039346656037),
        (b"\xff\xff\xff", 2787597222566293202),
    ],
)
def test_fnv64_broken_matches_follys_test_vectors(data: bytes, expected: int) -> None:
    assert fnv64_broken(data) == expected


# ---------------------------------------------------------------------------
# HostIdRoute


@pytest.mark.parametrize("host_id", HOSTS)
@pytest.mark.parametrize(("salt", "children"), [("s", 5), ("pool-a", 3), ("ünï", 7)])
def test_host_id_route_with_a_salt_picks_follys_hash_of_host_and_salt(
    host_id: int, salt: str, children: int
) -> None:
    route = HostIdRoute(tuple(dest(i) for i in range(children)), salt=salt, host_id=host_id)
    expected = ref_folly_hash(host_id, salt) % children
    assert tried_by(route) == [expected]


def test_a_salt_moves_hosts_between_children() -> None:
    unsalted = [tried_by(HostIdRoute(EIGHT, host_id=host)) for host in range(40)]
    salted = [tried_by(HostIdRoute(EIGHT, salt="x", host_id=host)) for host in range(40)]
    assert unsalted == [[host % 8] for host in range(40)]
    assert salted != unsalted


def test_host_id_route_salt_from_config() -> None:
    text = json.dumps(
        {
            "pools": {"A": {"servers": [s.address for s in SERVERS[:8]]}},
            "route": {"type": "HostIdRoute", "children": "Pool|A", "salt": "blue"},
        }
    )
    for host in HOSTS:
        assert tried_by(load_config(text, host_id=host).route) == [ref_folly_hash(host, "blue") % 8]


# ---------------------------------------------------------------------------
# LatestRoute


def test_latest_order_reproduces_mcroutes_weights_test() -> None:
    """mcrouter's LatestRouteTest `weights`: host id 123, thread ids 0..9999."""
    hits = [0, 0, 0, 0]
    for thread_id in range(10_000):
        hits[latest_order(123, [0.25, 0.5, 0.75, 1.0], 3, thread_id=thread_id)[0]] += 1
    assert hits == [959, 1888, 3073, 4080]


@pytest.mark.parametrize("host_id", HOSTS)
@pytest.mark.parametrize(
    ("failover_count", "salt", "weights"),
    [
        (5, "", None),
        (3, "", None),
        (8, "", None),
        (20, "", None),
        (5, "salty", None),
        (4, "", [0.1, 1.0, 0.5, 0.9, 0.3, 1.0, 0.7, 0.2]),
        (6, "x", [0.5, 1.0]),  # missing weights count 0.5
    ],
)
def test_latest_route_tries_the_children_mcrouter_picks(
    host_id: int, failover_count: int, salt: str, weights: list[float] | None
) -> None:
    route = LatestRoute(
        EIGHT,
        failover_count=failover_count,
        salt=salt,
        weights=None if weights is None else tuple(weights),
        host_id=host_id,
    )
    full_weights = [1.0] * 8 if weights is None else [*weights, *[0.5] * (8 - len(weights))]
    assert tried_by(route) == ref_latest_targets(host_id, full_weights, failover_count, salt)


def test_latest_route_keeps_a_single_child_whatever_the_count() -> None:
    assert tried_by(LatestRoute((dest(3),), failover_count=0, host_id=5)) == [3]


def test_latest_route_from_config_with_weights_and_salt() -> None:
    text = json.dumps(
        {
            "pools": {"A": {"servers": [s.address for s in SERVERS[:8]]}},
            "route": {
                "type": "LatestRoute",
                "children": "Pool|A",
                "failover_count": 3,
                "salt": "s1",
                "weights": [1, 0.5, 0.25, 1, 1, 0.75, 1, 0.1],
            },
        }
    )
    weights = [1, 0.5, 0.25, 1, 1, 0.75, 1, 0.1]
    for host in HOSTS:
        built = load_config(text, host_id=host).route
        assert tried_by(built) == ref_latest_targets(host, weights, 3, "s1")


def latest_config(**settings: object) -> str:
    route = {"type": "LatestRoute", "children": "Pool|A", "failover_count": 4, **settings}
    return json.dumps(
        {"pools": {"A": {"servers": [s.address for s in SERVERS[:8]]}}, "route": route}
    )


def first_replies(route: Route, replies: list[object]) -> tuple[object, int]:
    """Answer the sends in order with `replies`; the client's reply and the sends made."""
    ctx = FakeContext()
    pending = route.route(parse(b"get k\r\n"), ctx)
    for position, reply in enumerate(replies):
        if position < len(ctx.sent):
            ctx.sent[position].answer(reply)  # type: ignore[arg-type]
    return pending.reply, len(ctx.sent)


def test_latest_route_failover_errors_say_which_errors_fail_over() -> None:
    connect_error = error(Result.CONNECT_ERROR, b"SERVER_ERROR connect")
    plain = load_config(latest_config(), host_id=9).route
    assert first_replies(plain, [TIMEOUT, MISS]) == (MISS, 2)
    only_connect = load_config(latest_config(failover_errors=["connect_error"]), host_id=9).route
    assert first_replies(only_connect, [TIMEOUT]) == (TIMEOUT, 1)
    assert first_replies(only_connect, [connect_error, MISS]) == (MISS, 2)
    by_class = {"gets": ["connect_error"], "updates": ["timeout"], "deletes": ["timeout"]}
    per_class = load_config(latest_config(failover_errors=by_class), host_id=9).route
    assert first_replies(per_class, [TIMEOUT]) == (TIMEOUT, 1)


def test_latest_route_failover_policy_bounds_the_tries() -> None:
    policy = {"type": "LeastFailuresPolicy", "max_tries": 2}
    route = load_config(latest_config(failover_policy=policy), host_id=9).route
    reply, sends = first_replies(route, [TIMEOUT, TIMEOUT, TIMEOUT, TIMEOUT])
    assert reply is TIMEOUT and sends == 2


def test_latest_route_failover_limit_is_accepted_and_checked() -> None:
    limit = {"rate": 0.5, "burst": 10}
    route = load_config(latest_config(failover_limit=limit), host_id=9).route
    assert first_replies(route, [TIMEOUT, MISS]) == (MISS, 2)
    with pytest.raises(Exception, match="failover_limit"):
        load_config(latest_config(failover_limit={"rate": "fast"}), host_id=9)


# ---------------------------------------------------------------------------
# LatestRoute's thread_local_failover: each --num-proxies worker is a proxy thread


WORKERS = 4


@pytest.mark.parametrize("host_id", HOSTS)
@pytest.mark.parametrize(
    ("failover_count", "salt", "weights"),
    [
        (3, "", None),
        (8, "", None),
        (2, "salty", None),
        (4, "", [0.1, 1.0, 0.5, 0.9, 0.3, 1.0, 0.7, 0.2]),
    ],
)
def test_thread_local_failover_worker_k_tries_what_mcrouters_thread_k_tries(
    host_id: int, failover_count: int, salt: str, weights: list[float] | None
) -> None:
    settings: dict[str, object] = {"failover_count": failover_count, "thread_local_failover": True}
    if salt:
        settings["salt"] = salt
    if weights is not None:
        settings["weights"] = weights
    route = load_config(latest_config(**settings), host_id=host_id, num_proxies=WORKERS).route
    full_weights = [1.0] * 8 if weights is None else weights
    for worker in range(WORKERS):
        expected = ref_latest_targets(host_id, full_weights, failover_count, salt, worker)
        assert tried_by(route, worker) == expected, worker


@pytest.mark.parametrize("setting", [{}, {"thread_local_failover": False}])
@pytest.mark.parametrize("host_id", HOSTS)
def test_without_thread_local_failover_every_worker_tries_thread_zeros_choice(
    setting: dict[str, object], host_id: int
) -> None:
    route = load_config(latest_config(**setting), host_id=host_id, num_proxies=WORKERS).route
    expected = ref_latest_targets(host_id, [1.0] * 8, 4, "")
    assert [tried_by(route, worker) for worker in range(WORKERS)] == [expected] * WORKERS


def test_thread_local_failover_reproduces_mcrouters_weights_test_through_the_route() -> None:
    """LatestRouteTest `weights`: host 123, thread ids 0..9999, each thread's first child."""
    workers = 10_000
    route = LatestRoute(
        EIGHT[:4],
        failover_count=3,
        weights=(0.25, 0.5, 0.75, 1.0),
        thread_local_failover=True,
        host_id=123,
        num_proxies=workers,
    )
    hits = [0, 0, 0, 0]
    for worker in range(workers):
        ctx = FakeContext(worker_index=worker)
        route.route(parse(b"get key\r\n"), ctx)
        hits[server_index(ctx)] += 1
    assert hits == [959, 1888, 3073, 4080]


def test_thread_local_failover_as_mcrouters_test_has_it() -> None:
    """LatestRouteTest `thread_local_failover`: host 123, threads 0..9, 4 children, 3 tries.

    On: some thread's first choice differs from thread 0's. Off: none does.
    """
    four = EIGHT[:4]

    def first_choices(thread_local: bool) -> list[int]:
        route = LatestRoute(
            four, failover_count=3, thread_local_failover=thread_local, host_id=123, num_proxies=10
        )
        return [tried_by(route, worker)[0] for worker in range(10)]

    on, off = first_choices(True), first_choices(False)
    assert on == [ref_latest_targets(123, [1.0] * 4, 3, "", k)[0] for k in range(10)]
    assert len(set(on)) > 1
    assert len(set(off)) == 1


def test_thread_local_failover_targets_are_every_workers_choices() -> None:
    route = LatestRoute(
        EIGHT, failover_count=2, thread_local_failover=True, host_id=945921392, num_proxies=3
    )
    chosen = [
        index for k in range(3) for index in ref_latest_targets(945921392, [1.0] * 8, 2, "", k)
    ]
    assert [EIGHT.index(target) for target in route.targets()] == list(dict.fromkeys(chosen))
    single = LatestRoute(EIGHT, failover_count=2, host_id=945921392, num_proxies=3)
    assert [EIGHT.index(t) for t in single.targets()] == ref_latest_targets(
        945921392, [1.0] * 8, 2, ""
    )


def test_admin_route_answers_as_the_worker_that_routes() -> None:
    text = latest_config(thread_local_failover=True, failover_count=1)
    tree = load_config(text, host_id=3918636910, num_proxies=WORKERS).tree()
    for worker in range(WORKERS):
        routed = route_servers(tree, Op.SET, b"k", lambda _server: False, worker_index=worker)
        (expected,) = ref_latest_targets(3918636910, [1.0] * 8, 1, "", worker)
        assert routed == [SERVERS[expected]]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"thread_local_failover": "yes"}, "thread_local_failover"),
        ({"thread_local_failover": 1}, "thread_local_failover"),
        ({"enable_lease_pairing": True}, "name is required when lease pairing is enabled"),
        ({"enable_lease_pairing": "on", "name": "n"}, "enable_lease_pairing"),
        ({"name": 7}, "name"),
    ],
)
def test_latest_route_checks_its_options(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(latest_config(**settings), num_proxies=2)
    assert "$.route" in str(caught.value)


def test_latest_route_passes_lease_pairing_and_name_to_its_failover_route() -> None:
    """LatestRouteTest `leasePairingWithName`: accepted when named; inert otherwise."""
    route = load_config(latest_config(enable_lease_pairing=True, name="01"), host_id=9).route
    assert isinstance(route, LatestRoute)
    failover = route.failover_for(0)
    assert (failover.enable_lease_pairing, failover.name) == (True, "01")
    assert tried_by(route) == ref_latest_targets(9, [1.0] * 8, 4, "")
