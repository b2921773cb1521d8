"""L1L2CacheRoute through a real proxy and real memcached servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Memcached, Proxy, connect, direct_get, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def _set(server: Memcached, key: bytes, flags: int, value: bytes) -> None:
    with connect(server.port) as client:
        line = b"set %s %d 0 %d\r\n%s\r\n" % (key, flags, len(value), value)
        assert client.call(line) == b"STORED\r\n"


def test_l1_is_filled_from_l2_and_caches_l2s_misses(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    l1, l2 = memcached_factory(), memcached_factory()
    config = {
        "pools": {"L1": {"servers": [l1.address]}, "L2": {"servers": [l2.address]}},
        "route": {
            "type": "L1L2CacheRoute",
            "l1": "PoolRoute|L1",
            "l2": "PoolRoute|L2",
            "upgradingL1Exptime": 100,
            "ncacheExptime": 50,
            "ncacheUpdatePeriod": 2,
        },
    }
    proxy = proxy_factory(config)
    _set(l2, b"k", 7, b"big")
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 7 3\r\nbig\r\nEND\r\n"
        assert poll(lambda: direct_get(l1, b"k") == b"VALUE k 7 3\r\nbig\r\nEND\r\n")
        # A miss in both: L1 remembers it with mcrouter's negative-cache item.
        assert client.call(b"get gone\r\n", b"END\r\n") == b"END\r\n"
        ncache = b"VALUE gone 65536 6\r\nncache\r\nEND\r\n"
        assert poll(lambda: direct_get(l1, b"gone") == ncache)
        # L2 gets the key; the first ncache hit still answers a miss, the second
        # (ncacheUpdatePeriod) refreshes L1 from L2.
        _set(l2, b"gone", 1, b"back")
        assert client.call(b"get gone\r\n", b"END\r\n") == b"END\r\n"
        assert client.call(b"get gone\r\n", b"END\r\n") == b"END\r\n"
        back = b"VALUE gone 1 4\r\nback\r\nEND\r\n"
        assert poll(lambda: direct_get(l1, b"gone") == back)
        assert client.call(b"get gone\r\n", b"END\r\n") == back
        # Writes go to L1 only.
        assert client.call(b"set w 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert direct_get(l2, b"w") == b"END\r\n"


def _size_split_config(l1: Memcached, l2: Memcached) -> dict[str, Any]:
    """Values of 100 bytes or more in L2, behind a sentinel in L1."""
    return {
        "pools": {"L1": {"servers": [l1.address]}, "L2": {"servers": [l2.address]}},
        "route": {
            "type": "L1L2SizeSplitRoute",
            "l1": "PoolRoute|L1",
            "l2": "PoolRoute|L2",
            "threshold": 100,
        },
    }


def test_size_split_keeps_big_values_in_l2_behind_a_sentinel(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    l1, l2 = memcached_factory(), memcached_factory()
    proxy = proxy_factory(_size_split_config(l1, l2))
    big = b"x" * 500
    with connect(proxy.port) as client:
        assert client.call(b"set small 3 0 2\r\nhi\r\n") == b"STORED\r\n"
        assert client.call(b"set big 3 0 500\r\n" + big + b"\r\n") == b"STORED\r\n"
        assert direct_get(l1, b"small") == b"VALUE small 3 2\r\nhi\r\nEND\r\n"
        assert direct_get(l2, b"small") == b"END\r\n"
        assert direct_get(l1, b"big") == b"VALUE big 35 0\r\n\r\nEND\r\n"  # flags 3 | 0x20
        assert direct_get(l2, b"big") == b"VALUE big 3 500\r\n" + big + b"\r\nEND\r\n"
        assert (
            client.call(b"get big\r\n", b"END\r\n") == b"VALUE big 3 500\r\n" + big + b"\r\nEND\r\n"
        )
        gets = client.call(b"gets big\r\n", b"END\r\n")
        assert gets.startswith(b"VALUE big 3 500 ") and gets.endswith(big + b"\r\nEND\r\n")
        # L2 loses the value: gets expires the stale sentinel and reports a miss.
        with connect(l2.port) as direct:
            assert direct.call(b"delete big\r\n") == b"DELETED\r\n"
        assert client.call(b"gets big\r\n", b"END\r\n") == b"END\r\n"
        assert direct_get(l1, b"big") == b"END\r\n"


def test_size_split_takes_ms_as_set_and_mg_as_get(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    l1, l2 = memcached_factory(), memcached_factory()
    proxy = proxy_factory(_size_split_config(l1, l2))
    big = b"y" * 500
    with connect(proxy.port) as client:
        # ms writes what set writes: the value in L2, the sentinel (flags | 0x20) in L1.
        assert client.call(b"ms viams 500 F3 O7 k\r\n" + big + b"\r\n") == b"HD O7 kviams\r\n"
        assert direct_get(l1, b"viams") == b"VALUE viams 35 0\r\n\r\nEND\r\n"
        assert direct_get(l2, b"viams") == b"VALUE viams 3 500\r\n" + big + b"\r\nEND\r\n"
        assert client.call(b"get viams\r\n", b"END\r\n") == (
            b"VALUE viams 3 500\r\n" + big + b"\r\nEND\r\n")  # fmt: skip
        # mg reads what set wrote, with the flags asked for (the CAS unique is L1's).
        assert client.call(b"set viaset 4 0 500\r\n" + big + b"\r\n") == b"STORED\r\n"
        assert client.meta_call(b"mg viaset v f s k O1\r\n") == (
            b"VA 500 f4 s500 kviaset O1\r\n" + big + b"\r\n")  # fmt: skip
        l1_cas = client.meta_call(b"mg viaset c\r\n")
        with connect(l1.port) as direct:
            assert direct.meta_call(b"mg viaset c\r\n") == l1_cas
        # Small values stay in L1 and read as memcached answers them.
        assert client.call(b"ms small 2 F1 T0\r\nhi\r\n") == b"HD\r\n"
        assert direct_get(l1, b"small") == b"VALUE small 1 2\r\nhi\r\nEND\r\n"
        with connect(l1.port) as direct:
            for line in (b"mg small v f s t\r\n", b"mg small k O3\r\n", b"mg none v k\r\n"):
                assert client.meta_call(line) == direct.meta_call(line)
        # L2 loses the value: mg with c expires the stale sentinel and misses.
        with connect(l2.port) as direct:
            assert direct.call(b"delete viams\r\n") == b"DELETED\r\n"
        assert client.meta_call(b"mg viams v c\r\n") == b"EN\r\n"
        assert direct_get(l1, b"viams") == b"END\r\n"
