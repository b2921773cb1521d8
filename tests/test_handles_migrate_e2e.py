"""MigrateRoute through a real proxy and real memcached servers (wall-clock times)."""

from __future__ import annotations

import time
from collections.abc import Callable

from conftest import Memcached, Proxy, connect, direct_get

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def test_migrate_route_before_during_and_after(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    old, new = memcached_factory(), memcached_factory()

    def migrate(start_time: int) -> dict[str, object]:
        return {"type": "MigrateRoute", "from": "PoolRoute|old", "to": "PoolRoute|new",
                "start_time": start_time, "interval": 3600}  # fmt: skip

    now = int(time.time())
    config = {
        "pools": {"old": {"servers": [old.address]}, "new": {"servers": [new.address]}},
        "route": {
            "type": "PrefixSelectorRoute",
            "policies": {
                "done:": migrate(now - 3 * 3600),  # every key has moved
                "later:": migrate(now + 3600),  # none has
                "now:": migrate(now - 60),  # keys wait for their switch; deletes go to both
            },
        },
    }
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        assert client.call(b"set done:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"set later:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert direct_get(new, b"done:k") != b"END\r\n" and direct_get(old, b"done:k") == b"END\r\n"
        assert (
            direct_get(old, b"later:k") != b"END\r\n" and direct_get(new, b"later:k") == b"END\r\n"
        )
        for server in (old, new):
            with connect(server.port) as direct:
                assert direct.call(b"set now:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"set now:k 0 0 1\r\nw\r\n") == b"STORED\r\n"  # still the old pool's
        assert direct_get(old, b"now:k") == b"VALUE now:k 0 1\r\nw\r\nEND\r\n"
        assert client.call(b"delete now:k\r\n") == b"DELETED\r\n"
        assert direct_get(old, b"now:k") == direct_get(new, b"now:k") == b"END\r\n"
