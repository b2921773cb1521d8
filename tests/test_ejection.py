"""Ejection from a pool's ring (twemproxy's auto_eject_hosts), in memory.

The ring rebuilt without a server must be the ring nutcracker builds over the
servers left, which is the ring of a pool that lists only them (`ketama_update`
counts live servers and live weights alone); the running comparison with nutcracker
is in test_ejection_e2e.py. The Ejector is driven through a PoolRoute and a
FakeContext: failures in a row, what counts as one, the probe after the retry time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from mcrouter_trio.config import load_config
from mcrouter_trio.config._servers import PoolDefaults, parse_pool
from mcrouter_trio.config.twemproxy import TwemproxyConfigError, import_twemproxy
from mcrouter_trio.hashing import server_name, twemproxy_selector
from mcrouter_trio.hashing._selector import avoiding, make_selector
from mcrouter_trio.messages import Op, Pending, Reply, Request, Result, error_reply
from mcrouter_trio.routing._base import Route
from mcrouter_trio.routing._ejection import is_failure
from mcrouter_trio.routing._specs import EjectionSpec, PoolSpec, ServerSpec
from mcrouter_trio.routing.handles.failover import FailoverRoute
from mcrouter_trio.routing.handles.hash import HashSpec, PoolRoute
from mcrouter_trio.routing.testing import FakeContext

KEYS = [b"key:%d" % i for i in range(3000)]
PORTS = (11211, 40001, 40002, 40003, 40004)
NAMES = [server_name("127.0.0.1", port) for port in PORTS]

# (distribution, key hash, weights, ejected servers)
RING_CASES = [
    ("ketama", "fnv1a_64", (1, 1, 1, 1, 1), {1}),
    ("ketama", "md5", (1, 1, 1, 1, 1), {0, 3}),
    ("ketama", "md5", (1, 2, 3, 1, 5), {2}),
    ("ketama", "murmur", (3, 1, 1, 2, 1), {0, 1, 2}),
    ("ketama", "crc32a", (1, 1, 1, 1, 1), {4}),
    ("modula", "fnv1a_64", (1, 1, 1, 1, 1), {1}),
    ("modula", "md5", (2, 1, 1, 3, 1), {0, 4}),
    ("modula", "hsieh", (1, 1, 1, 1, 1), {2, 3}),
]


@pytest.mark.parametrize(("distribution", "key_hash", "weights", "ejected"), RING_CASES)
def test_ring_without_servers_is_the_ring_of_the_servers_left(
    distribution: str, key_hash: str, weights: tuple[int, ...], ejected: set[int]
) -> None:
    rebuilt = twemproxy_selector(distribution, key_hash, NAMES, weights, b"", ejected)
    live = [index for index in range(len(NAMES)) if index not in ejected]
    alone = twemproxy_selector(
        distribution, key_hash, [NAMES[i] for i in live], [weights[i] for i in live]
    )
    assert [rebuilt(key) for key in KEYS] == [live[alone(key)] for key in KEYS]
    assert {rebuilt(key) for key in KEYS} == set(live)


@pytest.mark.parametrize("ejected", [{0}, {2}, {1, 3}])
def test_ketama_with_equal_weights_moves_only_the_ejected_servers_keys(ejected: set[int]) -> None:
    full = twemproxy_selector("ketama", "fnv1a_64", NAMES, [1] * 5)
    rebuilt = twemproxy_selector("ketama", "fnv1a_64", NAMES, [1] * 5, b"", ejected)
    for key in KEYS:
        if full(key) not in ejected:
            assert rebuilt(key) == full(key)
        else:
            assert rebuilt(key) not in ejected


def test_random_draws_only_live_servers() -> None:
    select = twemproxy_selector("random", "md5", NAMES, [1] * 5, b"", {1, 4})
    assert {select(key) for key in KEYS} == {0, 2, 3}


def test_every_server_ejected_is_refused_by_the_builder() -> None:
    with pytest.raises(ValueError, match="every server is ejected"):
        twemproxy_selector("ketama", "md5", NAMES[:2], [1, 1], b"", {0, 1})


@pytest.mark.parametrize("name", ["Ch3", "Crc32", "WeightedCh3"])
@pytest.mark.parametrize("ejected", [{0}, {3}, {1, 2}])
def test_mcrouter_hashes_rehash_only_the_ejected_servers_keys(name: str, ejected: set[int]) -> None:
    full = make_selector(name, 5, weights=(1.0, 0.5, 1.0, 0.8, 1.0))
    rebuilt = avoiding(full, 5, ejected)
    moved = {rebuilt(key) for key in KEYS if full(key) in ejected}
    assert moved and not moved & ejected
    assert all(rebuilt(key) == full(key) for key in KEYS if full(key) not in ejected)


def test_avoiding_nothing_or_everything_is_the_full_selector() -> None:
    full = make_selector("Ch3", 3)
    assert avoiding(full, 3, ()) is full
    assert avoiding(full, 3, {0, 1, 2}) is full


# -- what counts as a failure ---------------------------------------------------------

FAILURE_CASES = [
    (error_reply(Result.CONNECT_ERROR, "connection error"), True),
    (error_reply(Result.CONNECT_TIMEOUT, "connection timeout"), True),
    (error_reply(Result.TIMEOUT, "Reply timeout"), True),
    (error_reply(Result.TKO, "Server unavailable. Reason: mc_res_connect_error"), True),
    (error_reply(Result.REMOTE_ERROR, "remote error"), True),  # a broken connection
    (Reply(Result.REMOTE_ERROR, b"SERVER_ERROR out of memory storing object\r\n"), False),
    (Reply(Result.NOTFOUND, b"END\r\n"), False),
    (Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR bad data chunk\r\n"), False),
    (error_reply(Result.LOCAL_ERROR, "proxy shutting down"), False),
]


@pytest.mark.parametrize(("reply", "counts"), FAILURE_CASES)
def test_what_counts_as_a_failure(reply: Reply, counts: bool) -> None:
    assert is_failure(reply) is counts


# -- the Ejector through a PoolRoute ------------------------------------------------------

SERVERS = tuple(ServerSpec("127.0.0.1", port) for port in PORTS[:3])
TIMEOUT = error_reply(Result.TIMEOUT, "Reply timeout")
MISS = Reply(Result.NOTFOUND, b"END\r\n")
VERSION = Reply(Result.OK, b"VERSION 1.6.21\r\n")


def ejecting_pool(
    hash_func: str = "Ketama", limit: int = 2, retry_ms: int = 30_000, **hash_options: Any
) -> PoolRoute:
    pool = PoolSpec("A", SERVERS, ejection=EjectionSpec(limit, retry_ms))
    if hash_func in ("Ketama", "Modula", "Random"):
        hash_options.setdefault("key_hash", "md5")
    return PoolRoute(pool, HashSpec(hash_func, **hash_options))


def get(key: bytes) -> Request:
    return Request(Op.GET, key, (key,))


def placement(route: PoolRoute) -> list[int]:
    return [route.selected_index(get(key)) for key in KEYS]


def answering(dead: set[int]) -> Callable[[ServerSpec, Request], Reply]:
    """Servers in `dead` time out; the others miss (and answer `version`)."""

    def answer(server: ServerSpec, request: Request) -> Reply:
        if SERVERS.index(server) in dead:
            return TIMEOUT
        return VERSION if request.op is Op.VERSION else MISS

    return answer


def send_to(route: PoolRoute, ctx: FakeContext, server: int, count: int) -> list[Reply | None]:
    """Route `count` gets whose keys the route sends to `server` now."""
    keys = [key for key in KEYS if route.selected_index(get(key)) == server][:count]
    return [route.route(get(key), ctx).reply for key in keys]


@pytest.mark.parametrize("hash_func", ["Ketama", "Modula", "Ch3", "Crc32"])
def test_a_server_failing_limit_times_in_a_row_leaves_the_ring(hash_func: str) -> None:
    route = ejecting_pool(hash_func, limit=3)
    ctx = FakeContext(answer=answering({1}))
    before = placement(route)
    assert send_to(route, ctx, 1, 2) == [TIMEOUT, TIMEOUT]
    ctx.advance(0)
    assert placement(route) == before  # two failures: still in
    assert send_to(route, ctx, 1, 1) == [TIMEOUT]
    after = placement(route)  # rebuilt at once: the next request takes the new ring
    assert 1 not in after
    for key_index, server in enumerate(before):
        if server != 1 and hash_func != "Modula":  # modula reshuffles, as nutcracker's does
            assert after[key_index] == server
    assert route.ejector is not None and route.ejector.ejected == {1}


def test_ketama_pool_ejects_as_nutcracker_rebuilds() -> None:
    route = ejecting_pool("Ketama", limit=1, server_weights=[1, 2, 1])
    ctx = FakeContext(answer=answering({0}))
    send_to(route, ctx, 0, 1)
    ctx.advance(0)
    names = [server_name(s.host, s.port) for s in SERVERS]
    alone = twemproxy_selector("ketama", "md5", names[1:], [2, 1])
    assert placement(route) == [1 + alone(key) for key in KEYS]


def test_an_answer_in_between_starts_the_count_again() -> None:
    route = ejecting_pool(limit=2)
    ctx = FakeContext()
    keys = [key for key in KEYS if route.selected_index(get(key)) == 2][:4]
    for key, reply in zip(keys, [TIMEOUT, MISS, TIMEOUT, MISS], strict=True):
        route.route(get(key), ctx)
        ctx.waiting[0].answer(reply)
    ctx.advance(0)
    assert route.ejector is not None and not route.ejector.ejected


def test_server_errors_of_memcached_do_not_eject() -> None:
    too_large = Reply(Result.REMOTE_ERROR, b"SERVER_ERROR object too large for cache\r\n")
    route = ejecting_pool(limit=1)
    ctx = FakeContext(answer=lambda server, request: too_large)
    send_to(route, ctx, 0, 5)
    ctx.advance(0)
    assert route.ejector is not None and not route.ejector.ejected


def test_ejected_server_is_probed_after_the_retry_time_and_rejoins_on_an_answer() -> None:
    route = ejecting_pool(limit=1, retry_ms=5000)
    dead = {1}
    ctx = FakeContext(answer=answering(dead))
    before = placement(route)
    send_to(route, ctx, 1, 1)
    ctx.advance(0)
    assert 1 not in placement(route)
    sent = len(ctx.sent)
    ctx.advance(4.9)
    assert len(ctx.sent) == sent  # no probe before the retry time
    ctx.advance(0.1)
    probe = ctx.sent[sent]
    assert (probe.server, probe.request.op) == (SERVERS[1], Op.VERSION)
    assert 1 not in placement(route)  # the probe timed out: still out
    ctx.advance(5.0)
    assert ctx.sent[sent + 1].request.op is Op.VERSION
    dead.clear()
    ctx.advance(5.0)  # this probe is answered
    ctx.advance(0)
    assert placement(route) == before


def test_every_server_ejected_routes_on_the_full_ring() -> None:
    route = ejecting_pool(limit=1)
    ctx = FakeContext(answer=answering({0, 1, 2}))
    before = placement(route)
    for server in range(3):
        send_to(route, ctx, server, 1)
        ctx.advance(0)
    assert route.ejector is not None and route.ejector.ejected == {0, 1, 2}
    assert placement(route) == before
    # Requests get their servers' own errors, as they would without ejection.
    assert send_to(route, ctx, 0, 1) == [TIMEOUT]


def test_failures_behind_a_failover_are_counted() -> None:
    pool = ejecting_pool(limit=2)
    backup = PoolRoute(PoolSpec("B", (ServerSpec("127.0.0.1", 40009),)))
    route = FailoverRoute((pool, backup))
    ctx = FakeContext(answer=lambda server, request: TIMEOUT if server == SERVERS[2] else MISS)
    keys = [key for key in KEYS if pool.selected_index(get(key)) == 2][:2]
    for key in keys:
        assert route.route(get(key), ctx).reply == MISS  # the backup answered
    ctx.advance(0)
    assert pool.ejector is not None and pool.ejector.ejected == {2}


def test_multi_gets_follow_the_rebuilt_ring_and_count() -> None:
    route = ejecting_pool(limit=1)
    ctx = FakeContext(answer=answering({0}))
    keys = tuple(KEYS[:50])

    def split(child: Route, request: Request) -> Pending:
        return child.route(request, ctx)

    route.route_whole(Request(Op.GET, keys[0], keys), ctx, split)
    ctx.advance(0)
    assert route.ejector is not None and route.ejector.ejected == {0}
    sent = len(ctx.sent)
    route.route_whole(Request(Op.GET, keys[0], keys), ctx, split)
    assert all(each.server != SERVERS[0] for each in ctx.sent[sent:])


def test_dry_runs_count_no_failure() -> None:
    route = ejecting_pool(limit=1)
    ctx = FakeContext(answer=answering({0, 1, 2}), dry_run=True)
    for server in range(3):
        assert send_to(route, ctx, server, 3) == [TIMEOUT] * 3
    ctx.advance(0)
    assert route.ejector is not None and not route.ejector.ejected


def test_a_pool_without_ejection_has_no_ejector() -> None:
    route = PoolRoute(PoolSpec("A", SERVERS))
    assert route.ejector is None
    assert route.targets()[0].__class__.__name__ == "DestinationRoute"


# -- config: pool keys and the twemproxy importer --------------------------------------

POOL_KEY_CASES: list[tuple[dict[str, object], EjectionSpec | str | None]] = [
    ({}, None),
    ({"auto_eject_hosts": False, "server_failure_limit": 5}, None),
    ({"auto_eject_hosts": True}, EjectionSpec(2, 30_000)),
    (
        {"auto_eject_hosts": True, "server_failure_limit": 3, "server_retry_timeout": 500},
        EjectionSpec(3, 500),
    ),
    ({"auto_eject_hosts": "yes"}, "auto_eject_hosts"),
    ({"auto_eject_hosts": True, "server_failure_limit": 0}, "server_failure_limit"),
    ({"auto_eject_hosts": True, "server_retry_timeout": 0}, "server_retry_timeout"),
]


@pytest.mark.parametrize(("keys", "expected"), POOL_KEY_CASES)
def test_pool_ejection_keys(keys: dict[str, object], expected: EjectionSpec | str | None) -> None:
    body = {"servers": ["127.0.0.1:5000", "127.0.0.1:5001"], **keys}
    spec, problems = parse_pool("A", body, PoolDefaults(), {})
    if isinstance(expected, str):
        assert [path for path, _ in problems] == [(expected,)]
    else:
        assert problems == [] and spec.ejection == expected


IMPORT_CASES: list[tuple[str, dict[str, object], list[str]]] = [
    (
        "auto_eject_hosts: true\n  server_failure_limit: 3\n  server_retry_timeout: 2000\n",
        {"auto_eject_hosts": True, "server_failure_limit": 3, "server_retry_timeout": 2000},
        [],
    ),
    ("auto_eject_hosts: true\n", {"auto_eject_hosts": True}, []),
    (
        "auto_eject_hosts: false\n  server_failure_limit: 3\n",
        {},
        [
            "server_failure_limit: no effect without auto_eject_hosts,"
            " ignored @ $.p.server_failure_limit"
        ],
    ),
]


@pytest.mark.parametrize(("yaml_keys", "pool_keys", "notes"), IMPORT_CASES)
def test_importer_carries_ejection_over(
    yaml_keys: str, pool_keys: dict[str, object], notes: list[str]
) -> None:
    text = (
        f"p:\n  listen: 127.0.0.1:1\n  timeout: 100\n  {yaml_keys}"
        "  servers:\n   - 127.0.0.1:5000:1\n"
    )
    imported = import_twemproxy(text)
    config = json.loads(re.sub(r"(?m)^//.*$", "", imported.config))
    body = config["pools"]["p"]
    assert {key: body[key] for key in body if key not in ("servers", "server_timeout")} == pool_keys
    assert list(imported.notes) == notes
    assert load_config(imported.config).route is not None


def test_importer_refuses_a_bad_failure_limit() -> None:
    text = (
        "p:\n  auto_eject_hosts: true\n  server_failure_limit: -1\n"
        "  servers:\n   - 127.0.0.1:5000:1\n"
    )
    with pytest.raises(TwemproxyConfigError, match=r"\$\.p\.server_failure_limit"):
        import_twemproxy(text)
