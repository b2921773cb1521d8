"""BigValueRoute through a real proxy and a real memcached: mcrouter's chunk format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Memcached, Proxy, connect, direct_get

from mcrouter_trio.hashing._spooky import spooky_hash64

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def _big_value_config(server: Memcached) -> dict[str, Any]:
    """Values over 5000 bytes split into chunks, written two at a time."""
    return {
        "pools": {"A": {"servers": [server.address]}},
        "route": {
            "type": "BigValueRoute",
            "target": "PoolRoute|A",
            "split_threshold": 5000,
            "batch_size": 2,
        },
    }


def test_big_values_are_chunked_as_mcrouter_chunks_them(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    server = memcached_factory()
    proxy = proxy_factory(_big_value_config(server))
    value = bytes(range(256)) * 80  # 20480 bytes: five chunks
    suffix = spooky_hash64(value) & 0xFFFF_FFFF
    with connect(proxy.port) as client:
        assert client.call(b"set big 7 0 %d\r\n%s\r\n" % (len(value), value)) == b"STORED\r\n"
        index = b"1-5-%d" % suffix
        assert direct_get(server, b"big") == b"VALUE big %d %d\r\n%s\r\nEND\r\n" % (
            7 | 0x8000, len(index), index)  # fmt: skip
        for i in range(5):
            chunk = value[i * 5000 : (i + 1) * 5000]
            key = b"big:%d:%d" % (i, suffix)
            assert direct_get(server, key) == b"VALUE %s 7 %d\r\n%s\r\nEND\r\n" % (
                key, len(chunk), chunk)  # fmt: skip
        whole = b"VALUE big %d %d\r\n%s\r\nEND\r\n" % (7 | 0x8000, len(value), value)
        assert client.call(b"get big\r\n", b"\r\nEND\r\n") == whole
        # mcrouter's own test vector (test_bigvalue.py): an index and two chunks
        # written by hand read back as one value.
        with connect(server.port) as direct:
            for line in (b"set key 32768 0 8\r\n1-2-1234\r\n", b"set key:0:1234 0 0 5\r\nhello\r\n",
                         b"set key:1:1234 0 0 6\r\n world\r\n"):  # fmt: skip
                assert direct.call(line) == b"STORED\r\n"
        assert (
            client.call(b"get key\r\n", b"END\r\n")
            == b"VALUE key 32768 11\r\nhello world\r\nEND\r\n"
        )
        # A lost chunk makes the whole value a miss.
        with connect(server.port) as direct:
            assert direct.call(b"delete key:1:1234\r\n") == b"DELETED\r\n"
        assert client.call(b"get key\r\n", b"END\r\n") == b"END\r\n"


def test_the_big_value_flags_put_every_route_behind_big_value_route(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    server = memcached_factory()
    config = {"pools": {"A": {"servers": [server.address]}}, "route": "PoolRoute|A"}
    proxy = proxy_factory(
        config,
        "--big-value-split-threshold", "100",
        "--big-value-batch-size", "1",
        "--big-value-hide-reply-flag",
    )  # fmt: skip
    value = b"v" * 250
    suffix = spooky_hash64(value) & 0xFFFF_FFFF
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 250\r\n" + value + b"\r\n") == b"STORED\r\n"
        index = b"1-3-%d" % suffix
        assert direct_get(server, b"k") == b"VALUE k 32768 %d\r\n%s\r\nEND\r\n" % (
            len(index), index)  # fmt: skip
        assert direct_get(server, b"k:2:%d" % suffix).endswith(b"v" * 50 + b"\r\nEND\r\n")
        reply = client.call(b"get k\r\n", b"\r\nEND\r\n")
        assert reply == b"VALUE k 0 250\r\n" + value + b"\r\nEND\r\n"  # the flag hidden
        assert client.call(b"set small 0 0 2\r\nhi\r\n") == b"STORED\r\n"
        assert direct_get(server, b"small") == b"VALUE small 0 2\r\nhi\r\nEND\r\n"


def test_meta_commands_split_and_join_as_set_and_get_do(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    server = memcached_factory()
    proxy = proxy_factory(_big_value_config(server))
    value = bytes(range(256)) * 80  # 20480 bytes: five chunks
    suffix = spooky_hash64(value) & 0xFFFF_FFFF
    index = b"1-5-%d" % suffix
    with connect(proxy.port) as client, connect(server.port) as direct:
        # ms writes exactly what set writes: the index item and mcrouter's chunks.
        line = b"ms viams %d F7 T0 O1 k\r\n%s\r\n" % (len(value), value)
        assert client.call(line) == b"HD O1 kviams\r\n"
        assert direct_get(server, b"viams") == b"VALUE viams %d %d\r\n%s\r\nEND\r\n" % (
            7 | 0x8000, len(index), index)  # fmt: skip
        for i in range(5):
            chunk = value[i * 5000 : (i + 1) * 5000]
            key = b"viams:%d:%d" % (i, suffix)
            assert direct_get(server, key) == b"VALUE %s 7 %d\r\n%s\r\nEND\r\n" % (
                key, len(chunk), chunk)  # fmt: skip
        # ... so get reads what ms wrote, and mg what set wrote.
        whole = b"VALUE viams %d %d\r\n%s\r\nEND\r\n" % (7 | 0x8000, len(value), value)
        assert client.call(b"get viams\r\n", b"\r\nEND\r\n") == whole
        line = b"set viaset 9 0 %d\r\n%s\r\n" % (len(value), value)
        assert client.call(line) == b"STORED\r\n"
        assert client.meta_call(b"mg viaset s v f t k O5\r\n") == (
            b"VA %d s%d v f%d t-1 kviaset O5\r\n%s\r\n" % (
                len(value), len(value), 9 | 0x8000, value)
        ).replace(b" v f", b" f")  # fmt: skip
        assert client.meta_call(b"mg viams s\r\n") == b"HD s%d\r\n" % len(value)
        # A plain item reads as memcached answers it; a miss too.
        assert client.call(b"set small 3 0 2\r\nhi\r\n") == b"STORED\r\n"
        for command in (b"mg small v f s k\r\n", b"mg small t\r\n", b"mg nothing v O2 k\r\n"):
            assert client.meta_call(command) == direct.meta_call(command)
        # A key sent base64-encoded ("YjY0" is "b64"): chunk keys are derived from
        # the decoded key, so get finds the value too.
        line = b"ms YjY0 %d b F1\r\n%s\r\n" % (len(value), value)
        assert client.call(line) == b"HD\r\n"  # memcached echoes b only after a k
        assert direct_get(server, b"b64:4:%d" % suffix).startswith(b"VALUE b64:4:")
        assert client.call(b"get b64\r\n", b"\r\nEND\r\n") == (
            b"VALUE b64 %d %d\r\n%s\r\nEND\r\n" % (1 | 0x8000, len(value), value))  # fmt: skip
        assert client.meta_call(b"mg YjY0 b v k\r\n") == (
            b"VA %d kYjY0 b\r\n%s\r\n" % (len(value), value))  # fmt: skip
        # md deletes the index, as delete does: the value is gone.
        assert client.call(b"md viams q\r\nmn\r\n") == b"MN\r\n"
        assert client.meta_call(b"mg viams v\r\n") == b"EN\r\n"
        # A chunk lost: a miss, with the flags memcached echoes on one.
        assert direct.call(b"delete viaset:2:%d\r\n" % suffix) == b"DELETED\r\n"
        assert client.meta_call(b"mg viaset v O3 k\r\n") == b"EN O3 kviaset\r\n"
