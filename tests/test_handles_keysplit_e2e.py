"""KeySplitRoute through a real proxy and a real memcached server."""

from __future__ import annotations

from collections.abc import Callable

from conftest import Memcached, Proxy, connect, direct_get, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def test_all_sync_writes_every_replica_key_and_delete_removes_them(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    server = memcached_factory()
    config = {
        "pools": {"A": {"servers": [server.address]}},
        "route": {
            "type": "KeySplitRoute",
            "destination": "PoolRoute|A",
            "replicas": 3,
            "all_sync": True,
        },
    }
    proxy = proxy_factory(config)
    replicas = [b"hot", b"hot::1", b"hot::2"]
    with connect(proxy.port) as client:
        assert client.call(b"set hot 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert poll(lambda: all(direct_get(server, key) != b"END\r\n" for key in replicas))
        # Whichever replica this host reads, it has the value.
        assert client.call(b"get hot\r\n", b"END\r\n") == b"VALUE hot 0 1\r\nv\r\nEND\r\n"
        assert client.call(b"delete hot\r\n") == b"DELETED\r\n"
        assert poll(lambda: all(direct_get(server, key) == b"END\r\n" for key in replicas))
