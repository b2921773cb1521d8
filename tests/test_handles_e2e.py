"""The new route handles through a real proxy and real memcached servers.

A server that is down is a free port nobody listens on: the proxy's connection
is refused (a failover-type error).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Client, Memcached, Proxy, connect, direct_get, free_port, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def pools(**servers: list[str]) -> dict[str, Any]:
    return {name: {"servers": addresses} for name, addresses in servers.items()}


def direct(server: Memcached, command: bytes, terminator: bytes = b"\r\n") -> bytes:
    with connect(server.port) as client:
        return client.call(command, terminator)


def ttl(server: Memcached, key: bytes) -> int:
    """The seconds `key` has left on `server` (-1: never expires), by `mg <key> t`."""
    line = direct(server, b"mg " + key + b" t\r\n")
    assert line.startswith(b"HD t"), line
    return int(line.split(b" t", 1)[1])


def down() -> str:
    return f"127.0.0.1:{free_port()}"


def test_broadcast_family(memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory) -> None:
    a, b, c = memcached_factory(), memcached_factory(), memcached_factory()
    config = {
        "pools": pools(A=[a.address, b.address, c.address], D=[down(), a.address]),
        "route": {
            "type": "PrefixSelectorRoute",
            "policies": {
                "async:": "AllAsyncRoute|Pool|A",
                "initial:": "AllInitialRoute|Pool|A",
                "majority:": "AllMajorityRoute|Pool|A",
                "fastest:": "AllFastestRoute|Pool|D",
            },
        },
    }
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        # AllAsync: the client is told NOT_STORED at once; every server gets the value.
        assert client.call(b"set async:k 0 0 1\r\nv\r\n") == b"NOT_STORED\r\n"
        assert poll(lambda: all(direct_get(s, b"async:k") != b"END\r\n" for s in (a, b, c)))
        assert client.call(b"get async:k\r\n", b"END\r\n") == b"END\r\n"  # the default reply
        # AllInitial: the first server's reply; the others are written too.
        direct(a, b"set initial:k 0 0 1\r\nx\r\n")
        assert client.call(b"add initial:k 0 0 1\r\nv\r\n") == b"NOT_STORED\r\n"
        assert poll(lambda: direct_get(c, b"initial:k") == b"VALUE initial:k 0 1\r\nv\r\nEND\r\n")
        # AllMajority: a delete that two of three servers can do is DELETED...
        for server in (a, b):
            direct(server, b"set majority:k 0 0 1\r\nv\r\n")
        assert client.call(b"delete majority:k\r\n") == b"DELETED\r\n"
        # ...and one that only one of three can do is NOT_FOUND.
        direct(c, b"set majority:k 0 0 1\r\nv\r\n")
        assert client.call(b"delete majority:k\r\n") == b"NOT_FOUND\r\n"
        # AllFastest: the server that is down does not make the client wait for an error.
        direct(a, b"set fastest:k 0 0 2\r\nhi\r\n")
        assert client.call(b"get fastest:k\r\n", b"END\r\n") == (
            b"VALUE fastest:k 0 2\r\nhi\r\nEND\r\n"
        )
        assert client.call(b"mg fastest:k v\r\n", b"\r\nhi\r\n") == b"VA 2\r\nhi\r\n"


def test_failover_errors_and_miss_failover(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    first, second = memcached_factory(), memcached_factory()
    dead = down()
    config = {
        "pools": pools(Dead=[dead], Up=[second.address], First=[first.address]),
        "route": {
            "type": "PrefixSelectorRoute",
            "policies": {
                # Only timeouts fail over: a refused connection is the client's answer.
                "strict:": {"type": "FailoverRoute", "children": ["PoolRoute|Dead", "PoolRoute|Up"],
                            "failover_errors": ["timeout"]},
                # Gets never fail over; updates do (the default set).
                "split:": {"type": "FailoverRoute", "children": ["PoolRoute|Dead", "PoolRoute|Up"],
                           "failover_errors": {"gets": []}},
                "miss:": {"type": "MissFailoverRoute",
                          "children": ["PoolRoute|First", "PoolRoute|Up"]},
            },
        },
    }  # fmt: skip
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set strict:k 0 0 1\r\nv\r\n").startswith(b"SERVER_ERROR")
        assert client.call(b"set split:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert direct_get(second, b"split:k") == b"VALUE split:k 0 1\r\nv\r\nEND\r\n"
        assert client.call(b"get split:k\r\n", b"\r\n").startswith(b"SERVER_ERROR")
        # MissFailover: a miss on the first pool is looked up in the next one.
        direct(second, b"set miss:k 0 0 1\r\nw\r\n")
        assert client.call(b"get miss:k\r\n", b"END\r\n") == b"VALUE miss:k 0 1\r\nw\r\nEND\r\n"
        assert client.call(b"mg miss:k v\r\n", b"\r\nw\r\n") == b"VA 1\r\nw\r\n"
        # Sets go to the first child only.
        assert client.call(b"set miss:n 0 0 1\r\nn\r\n") == b"STORED\r\n"
        assert direct_get(second, b"miss:n") == b"END\r\n"
        assert direct_get(first, b"miss:n") == b"VALUE miss:n 0 1\r\nn\r\nEND\r\n"


def test_failover_with_exptime_caps_what_the_failover_pool_keeps(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    backup = memcached_factory()
    config = {
        "pools": pools(Normal=[down()], Backup=[backup.address]),
        "route": {"type": "FailoverWithExptimeRoute", "normal": "PoolRoute|Normal",
                  "failover": "PoolRoute|Backup", "failover_exptime": 100},
    }  # fmt: skip
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert 90 <= ttl(backup, b"k") <= 100
        assert client.call(b"ms m 1 T5000\r\nv\r\n") == b"HD\r\n"
        assert 90 <= ttl(backup, b"m") <= 100
        assert client.call(b"set short 0 30 1\r\nv\r\n") == b"STORED\r\n"
        assert 20 <= ttl(backup, b"short") <= 30
        assert client.call(b"delete k\r\n") == b"DELETED\r\n"


def test_modify_key_and_exptime(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    config = {
        "pools": pools(A=[memcached.address]),
        "route": {
            "type": "ModifyKeyRoute",
            "ensure_key_prefix": "app:",
            "target": {"type": "ModifyExptimeRoute", "exptime": 500, "action": "min",
                       "target": "PoolRoute|A"},
        },
    }  # fmt: skip
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set k 7 0 2\r\nhi\r\n") == b"STORED\r\n"
        assert direct_get(memcached, b"app:k") == b"VALUE app:k 7 2\r\nhi\r\nEND\r\n"
        assert direct_get(memcached, b"k") == b"END\r\n"
        assert 490 <= ttl(memcached, b"app:k") <= 500
        # The client sees its own key.
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 7 2\r\nhi\r\nEND\r\n"
        assert client.call(b"mg k k v\r\n", b"\r\nhi\r\n") == b"VA 2 kk\r\nhi\r\n"
        assert client.call(b"get app:k\r\n", b"END\r\n") == b"VALUE app:k 7 2\r\nhi\r\nEND\r\n"
        # A shorter exptime is kept ("min").
        assert client.call(b"ms m 1 T20\r\nv\r\n") == b"HD\r\n"
        assert 10 <= ttl(memcached, b"app:m") <= 20
        # A key made too long by the prefix is refused by the route.
        long_key = b"x" * 248
        assert client.call(b"get " + long_key + b"\r\n") == (
            b"SERVER_ERROR ModifyKeyRoute: invalid key: invalid key: too long\r\n"
        )


def test_routing_group_latency_injection_logging_and_error_routes(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    reads, writes = memcached_factory(), memcached_factory()
    config = {
        "pools": pools(R=[reads.address], W=[writes.address]),
        "route": {
            "type": "RoutingGroupRoute",
            "routing_group_policies": {
                "get_like": {"type": "LatencyInjectionRoute", "child": "PoolRoute|R",
                             "before_latency_ms": 5, "after_latency_ms": 5},
                "update_like": "LoggingRoute|PoolRoute|W",
                "delete_like": {"type": "ErrorRoute", "result": "mc_res_busy"},
            },
            "default_policy": "DevNullRoute",
        },
    }  # fmt: skip
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nw\r\n") == b"STORED\r\n"
        assert direct_get(writes, b"k") == b"VALUE k 0 1\r\nw\r\nEND\r\n"
        direct(reads, b"set k 0 0 1\r\nr\r\n")
        replies = _pipelined(client, [b"get k\r\n"] * 20, b"END\r\n")
        assert replies == [b"VALUE k 0 1\r\nr\r\nEND\r\n"] * 20
        assert client.call(b"delete k\r\n") == b"SERVER_ERROR 307 busy\r\n"
        assert client.call(b"touch k 10\r\n") == b"NOT_FOUND\r\n"


def _pipelined(client: Client, commands: list[bytes], terminator: bytes) -> list[bytes]:
    """Send every command at once; the replies, in order."""
    client.send(b"".join(commands))
    return [client.read_until(terminator) for _ in commands]


def test_meta_only_route_type_is_refused_at_startup(memcached: Memcached, tmp_path: Path) -> None:
    config = tmp_path / "meta.json"
    route = {"type": "FailoverRoute", "children": ["PoolRoute|A", "SRRoute|other"]}
    config.write_text(json.dumps({"pools": pools(A=[memcached.address]), "route": route}))
    result = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "-p", str(free_port()), "-f", str(config),
         "--validate-config"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 3
    assert "SRRoute exists only inside Meta and is not supported @ $.route.children[1]" in output


def _landed(servers: dict[str, Memcached], keys: list[bytes]) -> dict[str, int]:
    """How many of `keys` each server holds."""
    return {
        name: sum(direct_get(server, key) != b"END\r\n" for key in keys)
        for name, server in servers.items()
    }


def test_failure_domains_keep_failover_out_of_a_tko_servers_rack(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    # Child 0 is down and in rack-a; a2 shares its rack, b1 and b2 are in rack-b. Once
    # the dead server is TKO its reply fails the rack, and failover skips a2.
    servers = {name: memcached_factory() for name in ("a2", "b1", "b2")}
    racks = {"dead": "rack-a", "a2": "rack-a", "b1": "rack-b", "b2": "rack-b"}
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    addresses["dead"] = down()
    keys = [b"fd-key-%d" % i for i in range(40)]

    def run(enabled: bool) -> dict[str, int]:
        config = {
            "pools": {
                name: {"servers": [addresses[name]], "failure_domains": [racks[name]]}
                for name in ("dead", "a2", "b1", "b2")
            },
            "route": {
                "type": "FailoverRoute",
                "children": ["PoolRoute|dead", "PoolRoute|a2", "PoolRoute|b1", "PoolRoute|b2"],
                "failover_policy": {
                    "type": "DeterministicOrderPolicy",
                    "max_tries": 3,
                    "max_error_tries": 3,
                    "ignore_normal_reply_index": True,
                    "enable_failure_domains": enabled,
                },
            },
        }
        proxy = proxy_factory(config)
        with connect(proxy.port) as client:
            # The first request finds the dead server refusing: hard TKO from then on.
            assert client.call(b"set prime 0 0 1\r\nv\r\n") == b"STORED\r\n"
            for key in keys:
                assert client.call(b"set %s 0 0 1\r\nv\r\n" % key) == b"STORED\r\n"
        landed = _landed(servers, keys)
        for server in servers.values():  # empty again for the next run
            assert direct(server, b"flush_all\r\n") == b"OK\r\n"
        return landed

    without = run(enabled=False)
    assert without["a2"] > 0  # the control: the plain order does pick a2 for some keys
    with_domains = run(enabled=True)
    assert with_domains["a2"] == 0
    assert with_domains["b1"] + with_domains["b2"] == len(keys)
