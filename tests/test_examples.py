"""Every example config loads, and the routing examples do what their READMEs say.

The end-to-end rows run an example's own config file with its loopback ports
replaced by the ports of the memcached servers the test starts, in port order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Memcached, Proxy, connect, direct_get, poll

from mcrouter_trio.config import load_config_file
from mcrouter_trio.config.twemproxy import import_twemproxy

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

EXAMPLES = Path(__file__).parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/*.json"))
#: The -R an example runs with (see its README).
ROUTE_PREFIX = {"multi-cluster": "/east/web/"}
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def test_the_examples_are_all_here() -> None:
    names = {path.parent.name for path in CONFIGS}
    assert {"shadowing", "weibo-keymap", "zero-loss-migration", "twemproxy-migration"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_example_config_loads(path: Path) -> None:
    prefix = ROUTE_PREFIX.get(path.parent.name, "/././")
    assert load_config_file(path, default_route=prefix).route is not None


def test_the_twemproxy_example_config_is_what_the_importer_prints() -> None:
    directory = EXAMPLES / "twemproxy-migration"
    imported = import_twemproxy(
        (directory / "nutcracker.yml").read_text(),
        None,
        source="examples/twemproxy-migration/nutcracker.yml",
    )
    assert imported.config.rstrip() == (directory / "config.json").read_text().rstrip()


def _on_test_servers(
    path: Path, memcached_factory: MemcachedFactory
) -> tuple[Callable[[str], str], list[Memcached]]:
    """Fresh memcached servers for the example's ports (in port order), and a function
    that puts their addresses in place of the example's in a config text."""
    ports = sorted({int(port) for port in _ADDRESS.findall(path.read_text())})
    servers = [memcached_factory() for _ in ports]
    by_port = {port: server.address for port, server in zip(ports, servers, strict=True)}

    def moved(text: str) -> str:
        return _ADDRESS.sub(lambda match: by_port[int(match.group(1))], text)

    return moved, servers


def test_shadowing_copies_a_tenth_of_the_keys(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    path = EXAMPLES / "shadowing" / "config.json"
    moved, (main_a, main_b, spare) = _on_test_servers(path, memcached_factory)
    proxy = proxy_factory(moved(path.read_text()))
    keys = [b"f%d" % i for i in range(100)]
    with connect(proxy.port) as client:
        for key in keys:
            assert client.call(b"set " + key + b" 0 0 1\r\nv\r\n") == b"STORED\r\n"
    copied = [5, 7, 13, 33, 43, 46, 58, 71, 83, 85, 89, 91, 93]  # mcrouter's test_shadow.py
    assert poll(lambda: all(direct_get(spare, keys[i]) != b"END\r\n" for i in copied))
    assert [i for i, key in enumerate(keys) if direct_get(spare, key) != b"END\r\n"] == copied
    # The pool itself has every key.
    assert all(direct_get(main_a, key) != direct_get(main_b, key) for key in keys)


def test_weibo_keymap_sends_user_keys_to_user_pool_together(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    path = EXAMPLES / "weibo-keymap" / "config.json"
    moved, servers = _on_test_servers(path, memcached_factory)
    default_pool, user_pool = servers[:3], servers[3:]
    proxy = proxy_factory(moved(path.read_text()))
    with connect(proxy.port) as client:
        for i in range(20):
            for field in (b"name", b"age"):
                key = b"user{%d}:%s" % (i, field)
                assert client.call(b"set " + key + b" 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"set feed:1 0 0 1\r\nv\r\n") == b"STORED\r\n"

    def holder(key: bytes) -> list[int]:
        return [i for i, server in enumerate(servers) if direct_get(server, key) != b"END\r\n"]

    for i in range(20):
        name, age = holder(b"user{%d}:name" % i), holder(b"user{%d}:age" % i)
        assert name == age and len(name) == 1 and servers[name[0]] in user_pool
    assert len(holder(b"feed:1")) == 1 and servers[holder(b"feed:1")[0]] in default_pool


def test_zero_loss_migration_dual_writes_then_switches_on_reload(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    directory = EXAMPLES / "zero-loss-migration"
    moved, servers = _on_test_servers(directory / "1-dual-write.json", memcached_factory)
    old, new = servers[:2], servers[2:]
    proxy = proxy_factory(moved((directory / "1-dual-write.json").read_text()))

    def held_by(pool: list[Memcached], key: bytes, value: bytes) -> bool:
        found = {direct_get(server, key) for server in pool} - {b"END\r\n"}
        return found == {b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)}

    with connect(proxy.port) as client:
        for i in range(20):
            assert client.call(b"set k%d 0 0 3\r\nold\r\n" % i) == b"STORED\r\n"
        assert poll(lambda: all(held_by(new, b"k%d" % i, b"old") for i in range(20)))
        assert all(held_by(old, b"k%d" % i, b"old") for i in range(20))
        assert client.call(b"delete k0\r\n") == b"DELETED\r\n"
        assert not held_by(old, b"k0", b"old") and not held_by(new, b"k0", b"old")
        # Reads come from the old pool: a value only the new pool has is not seen.
        for server in new:
            with connect(server.port) as direct:
                direct.call(b"set only-new 0 0 1\r\nn\r\n")
        assert client.call(b"get only-new\r\n", b"END\r\n") == b"END\r\n"
        # The switch: the same file, overwritten with step 2; the connection stays.
        switched = moved((directory / "2-switched.json").read_text())
        (proxy.log_path.parent / f"config-{proxy.port}.json").write_text(switched)
        hit = b"VALUE only-new 0 1\r\nn\r\nEND\r\n"
        assert poll(lambda: client.call(b"get only-new\r\n", b"END\r\n") == hit, 10)
        assert client.call(b"get k5\r\n", b"END\r\n") == b"VALUE k5 0 3\r\nold\r\nEND\r\n"
