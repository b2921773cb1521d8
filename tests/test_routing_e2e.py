"""Routing through a real proxy and real memcached: prefixes, production-shaped trees, timeouts.

- `-R/--route-prefix` and routing prefixes on keys, `keep_routing_prefix`;
- a production-shaped tree (PrefixSelectorRoute -> OperationSelectorRoute ->
  FailoverRoute over two pools) failing over, and taking the whole-multi-get path
  whatever its root is;
- a pool's `connect_timeout` against a server that never completes a handshake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Client, Memcached, Proxy, connect, direct_get

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def servers_stats(client: Client) -> dict[str, str]:
    """`stats servers`: one `host:port:...` key per server, its counters as the value."""
    raw = client.call(b"stats servers\r\n", b"END\r\n")
    lines = [line.split(b" ", 2) for line in raw.split(b"\r\n") if line.startswith(b"STAT ")]
    return {key.decode(): value.decode() for _, key, value in lines}


def requests_to(client: Client, server: Memcached) -> int:
    for key, value in servers_stats(client).items():
        if key.startswith(f"127.0.0.1:{server.port}:"):
            return int(value.split("requests:")[1].split()[0])
    raise AssertionError(f"no stats for {server.address}")


def test_route_prefix_selects_the_default_route_and_strips_the_prefix(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    config = {"pools": {"A": {"servers": [memcached.address]}}, "route": "PoolRoute|A"}
    proxy = proxy_factory(config, "-R", "/dc1/web/")
    with connect(proxy.port) as client:
        assert client.call(b"set /dc1/web/k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        # The prefix is stripped before the key reaches memcached...
        assert direct_get(memcached, b"k") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        # ...and put back in front of the key in the client's VALUE line.
        assert client.call(b"get /dc1/web/k\r\n", b"END\r\n") == (
            b"VALUE /dc1/web/k 0 1\r\nv\r\nEND\r\n"
        )
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        assert client.call(b"get /*/web/k\r\n", b"END\r\n") == b"VALUE /*/web/k 0 1\r\nv\r\nEND\r\n"
        for other in (b"/dc2/web/k", b"/dc1/api/k"):
            assert client.call(b"get " + other + b"\r\n") == (
                b"SERVER_ERROR RootRoute: No rh found\r\n"
            )
        assert client.call(b"set /dc2/web/k 0 0 1\r\nv\r\n") == (
            b"SERVER_ERROR RootRoute: No rh found\r\n"
        )


def test_keep_routing_prefix_sends_the_key_as_the_client_wrote_it(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    config = {
        "pools": {"A": {"servers": [memcached.address], "keep_routing_prefix": True}},
        "route": "PoolRoute|A",
    }
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set /././k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert direct_get(memcached, b"/././k") == b"VALUE /././k 0 1\r\nv\r\nEND\r\n"
        assert direct_get(memcached, b"k") == b"END\r\n"


def production_config(main: Memcached, backup: Memcached, other: Memcached) -> dict[str, Any]:
    failover = {"type": "FailoverRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}
    return {
        "pools": {
            "A": {"servers": [main.address]},
            "B": {"servers": [backup.address]},
            "C": {"servers": [other.address]},
        },
        "route": {
            "type": "PrefixSelectorRoute",
            "policies": {"session:": "PoolRoute|C", "session:admin:": "PoolRoute|A"},
            "wildcard": {
                "type": "OperationSelectorRoute",
                "operation_policies": {"get": failover, "set": failover},
                "default_policy": "PoolRoute|A",
            },
        },
    }


def test_a_production_shaped_tree_routes_by_key_prefix_and_command(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    main, backup, other = memcached_factory(), memcached_factory(), memcached_factory()
    proxy = proxy_factory(production_config(main, backup, other))
    with connect(proxy.port) as client:
        for key in (b"user:1", b"session:1", b"session:admin:1"):
            assert client.call(b"set " + key + b" 0 0 1\r\nv\r\n") == b"STORED\r\n"
    assert direct_get(main, b"user:1") == b"VALUE user:1 0 1\r\nv\r\nEND\r\n"
    assert direct_get(other, b"session:1") == b"VALUE session:1 0 1\r\nv\r\nEND\r\n"
    # The longest prefix wins.
    assert direct_get(main, b"session:admin:1") == b"VALUE session:admin:1 0 1\r\nv\r\nEND\r\n"
    assert direct_get(backup, b"user:1") == b"END\r\n"


def test_a_production_shaped_tree_fails_over_when_its_first_pool_is_gone(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    main, backup, other = memcached_factory(), memcached_factory(), memcached_factory()
    proxy = proxy_factory(production_config(main, backup, other))
    with connect(backup.port) as direct:
        for key in (b"a", b"b", b"c"):
            assert direct.call(b"set " + key + b" 0 0 1\r\n" + key + b"\r\n") == b"STORED\r\n"
    main.stop()
    with connect(proxy.port) as client:
        assert client.call(b"get a\r\n", b"END\r\n") == b"VALUE a 0 1\r\na\r\nEND\r\n"
        # A multi-get goes whole to the first pool, then key by key to the backup.
        assert client.call(b"get a b c\r\n", b"END\r\n") == (
            b"VALUE a 0 1\r\na\r\nVALUE b 0 1\r\nb\r\nVALUE c 0 1\r\nc\r\nEND\r\n"
        )
        assert client.call(b"set d 0 0 1\r\nd\r\n") == b"STORED\r\n"
    assert direct_get(backup, b"d") == b"VALUE d 0 1\r\nd\r\nEND\r\n"


def test_multi_gets_go_whole_through_any_tree_that_sends_every_key_one_way(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    main, backup, other = memcached_factory(), memcached_factory(), memcached_factory()
    proxy = proxy_factory(production_config(main, backup, other))
    keys = [b"user:%d" % i for i in range(20)]
    with connect(proxy.port) as client:
        before = requests_to(client, main)
        assert client.call(b"get " + b" ".join(keys) + b"\r\n", b"END\r\n") == b"END\r\n"
        # One request for twenty keys: the client's get went to memcached as it was.
        assert requests_to(client, main) == before + 1
        assert requests_to(client, backup) == 0
        # Keys that part ways (another key prefix, another pool) are split per server.
        assert client.call(b"get user:1 session:1\r\n", b"END\r\n") == b"END\r\n"
        assert requests_to(client, main) == before + 2
        assert requests_to(client, other) == 1


def test_a_pool_connect_timeout_answers_connection_timeout(
    unanswered_listener: int, memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    config = {
        "pools": {
            "A": {"servers": [f"127.0.0.1:{unanswered_listener}"], "connect_timeout": 200},
            "B": {"servers": [memcached.address]},
        },
        "route": {"type": "FailoverRoute", "children": ["PoolRoute|A", "PoolRoute|B"]},
    }
    direct = {
        "pools": {"A": {"servers": [f"127.0.0.1:{unanswered_listener}"], "connect_timeout": 200}},
        "route": "PoolRoute|A",
    }
    alone = proxy_factory(direct)
    with connect(alone.port) as client:
        assert client.call(b"get k\r\n") == b"SERVER_ERROR connection timeout\r\n"
    with_backup = proxy_factory(config)
    with connect(with_backup.port) as client:
        # A connect timeout is a failover-type error: the backup answers.
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
    assert direct_get(memcached, b"k") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
