"""Shadowing and rate limits through a real proxy and real memcached servers."""

from __future__ import annotations

from collections.abc import Callable

from conftest import Memcached, Proxy, connect, direct_get, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

#: mcrouter's test_shadow.py: of keys f0..f99, key_fraction_range [0, 0.1] shadows these.
SHADOWED = [5, 7, 13, 33, 43, 46, 58, 71, 83, 85, 89, 91, 93]


def test_pool_route_shadows_a_key_fraction_to_another_pool(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    a, b, shadow = memcached_factory(), memcached_factory(), memcached_factory()
    config = {
        "pools": {"A": {"servers": [a.address, b.address]}, "S": {"servers": [shadow.address]}},
        "route": {
            "type": "PoolRoute",
            "pool": "A",
            "shadows": [
                {"target": "PoolRoute|S", "index_range": [0, 2], "key_fraction_range": [0, 0.1]}
            ],
        },
    }
    proxy = proxy_factory(config)
    keys = [b"f%d" % i for i in range(100)]
    with connect(proxy.port) as client:
        for key in keys:
            assert client.call(b"set " + key + b" 0 0 1\r\nv\r\n") == b"STORED\r\n"
        # The client reads from the pool; every key is there.
        for key in keys:
            assert client.call(b"get " + key + b"\r\n", b"END\r\n").startswith(b"VALUE ")

    def shadow_has(key: bytes) -> bool:
        return direct_get(shadow, key) != b"END\r\n"

    assert poll(lambda: all(shadow_has(keys[i]) for i in SHADOWED))
    assert [i for i, key in enumerate(keys) if shadow_has(key)] == SHADOWED


def test_rates_and_rate_limit_route_fall_back_over_the_limit(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    main, spare = memcached_factory(), memcached_factory()
    slow = {"gets_rate": 0.001, "gets_burst": 2, "sets_rate": 0.001, "sets_burst": 1}
    config = {
        "pools": {"M": {"servers": [main.address]}, "F": {"servers": [spare.address]}},
        "route": {
            "type": "PrefixSelectorRoute",
            "policies": {
                "pool:": {"type": "PoolRoute", "pool": "M", "rates": slow},
                "limit:": {
                    "type": "RateLimitRoute",
                    "target": "PoolRoute|M",
                    "rates": slow,
                    "fallback": "PoolRoute|F",
                },
            },
        },
    }
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set pool:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        # Out of set tokens: the default reply, nothing written.
        assert client.call(b"set pool:j 0 0 1\r\nv\r\n") == b"NOT_STORED\r\n"
        assert direct_get(main, b"pool:j") == b"END\r\n"
        hit = b"VALUE pool:k 0 1\r\nv\r\nEND\r\n"
        assert client.call(b"get pool:k\r\n", b"END\r\n") == hit
        assert client.call(b"get pool:k\r\n", b"END\r\n") == hit
        assert client.call(b"get pool:k\r\n", b"END\r\n") == b"END\r\n"  # the burst is spent
        # RateLimitRoute: past the limit, the fallback pool serves.
        assert client.call(b"set limit:k 0 0 4\r\nmain\r\n") == b"STORED\r\n"
        assert client.call(b"set limit:k 0 0 5\r\nspare\r\n") == b"STORED\r\n"
        assert direct_get(main, b"limit:k") == b"VALUE limit:k 0 4\r\nmain\r\nEND\r\n"
        assert direct_get(spare, b"limit:k") == b"VALUE limit:k 0 5\r\nspare\r\nEND\r\n"
