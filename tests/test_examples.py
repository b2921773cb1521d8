"""Every example config loads, and the routing examples do what their READMEs say.

The end-to-end rows run an example's own config file with its loopback ports
replaced by the ports of the memcached servers the test starts, in port order.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from conftest import Client, Memcached, Proxy, connect, direct_get, poll

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


# -- warmup-ha: the article's HA drill (section 5.4.7), with the pool killed under load --

#: What mcrouter answers a write whose AllSyncRoute child is a dead server (the worst
#: reply wins): the connection lost mid-request, the connect refused, then fail-fast TKO.
_DEAD_POOL_WRITE_ERROR = re.compile(
    rb"SERVER_ERROR (Server unavailable\. Reason: mc_res_\w+|connection error|remote error)\r\n"
)


def _get(client: Client, keys: bytes) -> bytes:
    """The whole reply to `get <keys>`: its VALUE blocks and END, or an error line."""
    client.send(b"get %s\r\n" % keys)
    reply = b""
    while True:
        line = client.read_until(b"\r\n")
        reply += line
        if not line.startswith(b"VALUE "):
            return reply  # END, or an error in its place
        reply += client.read_exactly(int(line.split()[3]) + 2)


def _holders(servers: list[Memcached], key: bytes) -> list[int]:
    return [i for i, server in enumerate(servers) if direct_get(server, key) != b"END\r\n"]


def _mirrored(local: list[Memcached], backup: list[Memcached], key: bytes) -> bool:
    """Whether `key` is held by the same one server index in both pools."""
    where = _holders(local, key)
    return len(where) == 1 and where == _holders(backup, key)


def test_warmup_ha_drill_kill_9_the_localhost_pool_under_load(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """The example's config with every `localhost` server SIGKILLed while clients read
    and write: reads never fail (a dead cold pool is skipped, `backup` answers), writes
    get mcrouter's error for the dead pool and still reach `backup`, and once the
    servers are back (empty) the pool is probed up, writes are stored in both pools
    again and reads refill it, as the article shows with `getkey.sh`."""
    path = EXAMPLES / "warmup-ha" / "config.json"
    moved, servers = _on_test_servers(path, memcached_factory)
    local, backup = servers[:3], servers[3:]  # ports 21211-21213, then 21221-21223
    proxy = proxy_factory(
        moved(path.read_text()),
        # Fast probes; a server timeout no loaded test machine reaches.
        "-r", "50", "--probe-timeout-max", "200", "--server-timeout", "10000",
    )  # fmt: skip
    preloaded = [b"key%d" % i for i in range(1, 201)]
    with connect(proxy.port) as client:
        for key in preloaded:
            assert client.call(b"set %s 0 0 4\r\ntest\r\n" % key) == b"STORED\r\n"
    # One key held by each localhost server (at the same index in both pools).
    on_server: dict[int, bytes] = {}
    for key in preloaded:
        where = _holders(local, key)
        assert where == _holders(backup, key) and len(where) == 1
        on_server.setdefault(where[0], key)
    assert sorted(on_server) == [0, 1, 2]

    phase = ["up"]  # "up", "down" (killed, until writes are stored again), "recovered"
    stop = False
    done = [0] * 4
    unexpected: list[tuple[str, bytes, bytes]] = []
    write_errors: list[bytes] = []
    problems: list[BaseException] = []

    def load(worker: int) -> None:
        try:
            with connect(proxy.port, timeout=60) as client:
                i = 0
                while not stop:
                    before = phase[0]
                    a, b = preloaded[(worker * 37 + i) % 200], preloaded[(i * 11) % 200]
                    reply = _get(client, b"%s %s" % (a, b))
                    hit = b"VALUE %s 0 4\r\ntest\r\n"
                    if reply != hit % a + hit % b + b"END\r\n":
                        unexpected.append((before, b"get", reply))
                    key = b"w%d-%d" % (worker, i)
                    reply = client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(key), key))
                    if reply != b"STORED\r\n":
                        # Sent or answered while the pool was down (the phase may
                        # change while the request is in flight).
                        while_down = "down" in (before, phase[0])
                        if while_down and _DEAD_POOL_WRITE_ERROR.fullmatch(reply):
                            write_errors.append(reply)
                        else:
                            unexpected.append((before, b"set", reply))
                    # Stored in backup at least: AllSyncRoute waited for both pools.
                    reply = _get(client, key)
                    if reply != b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(key), key):
                        unexpected.append((before, b"get own", reply))
                    i += 1
                    done[worker] = i
        except BaseException as exc:
            problems.append(exc)

    def progressed(since: list[int], count: int) -> bool:
        return all(d >= s + count for d, s in zip(done, since, strict=True)) or bool(problems)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        assert poll(lambda: progressed([0] * 4, 30), 60)

        # 5.4.7: the localhost pool dies (kill -9 every server of it) under load.
        phase[0] = "down"
        for server in local:
            server.process.kill()
        for server in local:
            server.process.wait()
        killed_at = list(done)
        assert poll(lambda: progressed(killed_at, 50), 60)
        with connect(proxy.port) as client:
            reply = client.call(b"set outage 0 0 4\r\ndown\r\n")
        assert _DEAD_POOL_WRITE_ERROR.fullmatch(reply), reply
        assert direct_get(backup[_holders(backup, b"outage")[0]], b"outage") == (
            b"VALUE outage 0 4\r\ndown\r\nEND\r\n"
        )

        # The servers come back, empty; probes bring each one back into service.
        for server in local:
            server.restart()

        def stored_everywhere() -> bool:
            with connect(proxy.port) as client:
                return all(
                    client.call(b"set %s 0 0 4\r\ntest\r\n" % key) == b"STORED\r\n"
                    for key in on_server.values()
                )

        assert poll(stored_everywhere, 60)
        phase[0] = "recovered"
        recovered_at = list(done)
        assert poll(lambda: progressed(recovered_at, 50), 60)
    finally:
        stop = True
        for thread in threads:
            thread.join(60)
    assert not problems, problems
    assert unexpected == [], unexpected[:10]

    # The article's check: what was read through the proxy is back in the localhost
    # pool, on the server that mirrors its backup server; what was not read is not.
    with connect(proxy.port) as client:
        for key in (b"outage", b"w0-1"):
            reply = client.call(b"get %s\r\n" % key, b"END\r\n")
            assert reply.startswith(b"VALUE %s 0 " % key), reply
    for key in (b"key1", b"key2", b"outage", b"w0-1"):
        assert poll(partial(_mirrored, local, backup, key), 30), key
    # A key written before the kill and not read since stays in backup only: the
    # backup pool is not copied back wholesale (the article's caveat).
    assert _holders(local, b"w1-5") == [] and len(_holders(backup, b"w1-5")) == 1
    assert write_errors, "no write saw the dead pool's error"
