"""Third-party memcached clients, each run against memcached and through the proxy.

Every client runs the same calls twice: against a memcached of its own (the control)
and through a proxy whose PoolRoute spreads the keys over two other memcached. The
answers the client hands its caller must be the same both ways, so a reply the proxy
frames differently (a missing `END`, a wrong word, a hang, noreply mishandled) fails
the comparison. What the proxy answers by itself differs on purpose and is checked on
its own: `stats` describes the proxy (memcached's per-server groups such as `items` and
`slabs` are empty), `version` names the proxy after the memcached version, and
`flush_all` needs `--enable-flush-cmd` and then reaches every server.

Clients: python-memcached (also with the checks of twemproxy's own memcache test,
`tests/test_memcache/test_gets.py`), aiomcache and emcache (asyncio), pylibmc
(libmemcached), and pymemcache's HashClient and PooledClient. None of them sends meta
commands.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiomcache
import attrs
import emcache
import memcache
import pylibmc
import pytest
from conftest import Memcached, Proxy, connect, pool_config, stats_on
from pymemcache import serde
from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheServerError

from mcrouter_trio import SERVER_VERSION

ProxyFactory = Callable[..., Proxy]
MemcachedFactory = Callable[..., Memcached]

#: The key the scenarios store their largest values under.
BIG = "big"


@attrs.frozen
class Setup:
    control: Memcached  # the clients' answers straight from memcached
    pool: tuple[Memcached, Memcached]  # the servers behind the proxy
    proxy: Proxy  # PoolRoute over `pool`, flush_all enabled


@pytest.fixture
def setup(memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory) -> Setup:
    control = memcached_factory()
    pool = (memcached_factory(), memcached_factory())
    config = pool_config(pool[0].address, pool[1].address)
    return Setup(control, pool, proxy_factory(config, "--enable-flush-cmd"))


def largest_value(server: Memcached, flags: int = 0) -> int:
    """The largest value `server` stores under `BIG` with `flags`, found by bisection.

    Less than the 1 MB item size: the item's header, key and flags share it.
    """
    stored, refused = 1 << 19, (1 << 20) + 1
    with connect(server.port) as client:
        while refused - stored > 1:
            size = (stored + refused) // 2
            request = b"set %s %d 0 %d\r\n%s\r\n" % (BIG.encode(), flags, size, b"x" * size)
            if client.call(request) == b"STORED\r\n":
                stored = size
            else:
                refused = size
        client.call(b"delete %s\r\n" % BIG.encode())
    return stored


class Recorder:
    """Each call's result, or its exception's type and text, by name."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}

    def __call__(self, name: str, call: Callable[[], object]) -> None:
        try:
            self.results[name] = call()
        except Exception as error:
            self.results[name] = f"{type(error).__name__}: {error}"

    async def wait(self, name: str, call: Awaitable[object]) -> None:
        try:
            self.results[name] = await call
        except Exception as error:
            self.results[name] = f"{type(error).__name__}: {error}"


def assert_same(direct: dict[str, object], routed: dict[str, object]) -> None:
    differ = {
        name: (direct[name], routed.get(name))
        for name in direct
        if direct[name] != routed.get(name)
    }
    assert not differ, f"(memcached, proxy) answers differ: {differ}"


def assert_keys_on_both(pool: tuple[Memcached, Memcached]) -> None:
    """Both servers behind the proxy took writes: the calls really crossed the pool."""
    for server in pool:
        with connect(server.port) as client:
            assert int(stats_on(client)["cmd_set"]) > 0, f"no set reached {server.address}"


def run_async(call: Awaitable[dict[str, object]]) -> dict[str, object]:
    async def bounded() -> dict[str, object]:
        return await asyncio.wait_for(call, timeout=60)

    return asyncio.run(bounded())


# -- python-memcached and twemproxy's memcache test ------------------------------------


def _python_memcached(port: int, **options: Any) -> memcache.Client:
    return memcache.Client([f"127.0.0.1:{port}"], socket_timeout=5, **options)


def twemproxy_memcache_checks(port: int) -> None:
    """What twemproxy's tests/test_memcache/test_gets.py checks, with python-memcached:
    set/get/incr/delete, then set_multi/get_multi/delete_multi of 10 keys and of 179 up
    to 895 keys, then get_multi of keys of which half do not exist.
    """
    client = _python_memcached(port)
    client.set("k", "v")
    assert client.get("k") == "v"
    client.set("key", "1")
    for expected in range(2, 12):
        client.incr("key")
        assert client.get("key") == str(expected)
    client.delete("key")
    assert client.get("key") is None

    def multi_round_trip(values: dict[str, str]) -> None:
        client.set_multi(values)
        keys = sorted(values)
        assert client.get_multi(keys) == values
        client.delete_multi(keys)
        assert client.get_multi(keys) == {}

    multi_round_trip({f"kkk-{i}": f"vvv-{i}" for i in range(10)})
    for count in range(179, 1000, 179):
        multi_round_trip({f"kkk-{i}": f"vvv-{i}" for i in range(count)})

    values = {f"kkk-{i}": f"vvv-{i}" for i in range(10)}
    client.set_multi(values)
    keys = [*values, *(f"x-{key}" for key in values)]
    random.Random(7).shuffle(keys)
    for _ in range(2):
        assert client.get_multi(keys) == values
    client.delete_multi(keys)
    assert client.get_multi(keys) == {}
    client.disconnect_all()


def imported_twemproxy_config(tmp_path: Path, pool: tuple[Memcached, Memcached]) -> str:
    """`import-twemproxy` of the nutcracker.yml twemproxy's test harness writes
    (tests/lib/server_modules.py: modula over fnv1a_64, named servers)."""
    servers = "\n".join(f"    - {s.address}:1 mc-{i}" for i, s in enumerate(pool))
    yml = tmp_path / "nutcracker.yml"
    yml.write_text(
        "ntest:\n  listen: 127.0.0.1:4100\n  hash: fnv1a_64\n  distribution: modula\n"
        "  preconnect: true\n  auto_eject_hosts: false\n  redis: false\n  backlog: 512\n"
        "  timeout: 400\n  client_connections: 0\n  server_connections: 1\n"
        "  server_retry_timeout: 2000\n  server_failure_limit: 2\n"
        f"  servers:\n{servers}\n"
    )
    command = [sys.executable, "-m", "mcrouter_trio", "import-twemproxy", str(yml)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("config", ["imported from nutcracker.yml", "PoolRoute"])
def test_twemproxy_memcache_test_passes_through_the_proxy(
    config: str,
    tmp_path: Path,
    memcached_factory: MemcachedFactory,
    proxy_factory: ProxyFactory,
) -> None:
    control = memcached_factory()
    twemproxy_memcache_checks(control.port)

    pool = (memcached_factory(), memcached_factory())
    if config == "PoolRoute":
        proxy = proxy_factory(pool_config(pool[0].address, pool[1].address))
    else:
        proxy = proxy_factory(imported_twemproxy_config(tmp_path, pool))
    twemproxy_memcache_checks(proxy.port)
    assert_keys_on_both(pool)


def python_memcached_calls(port: int, largest: int) -> dict[str, object]:
    client = _python_memcached(port, cache_cas=True, server_max_value_length=2 << 20)
    record = Recorder()
    record("flush_all", client.flush_all)
    record("set", lambda: client.set("a", "x"))
    record("add existing", lambda: client.add("a", "y"))
    record("add", lambda: client.add("b", "y"))
    record("replace missing", lambda: client.replace("missing", "q"))
    record("replace", lambda: client.replace("b", "yy"))
    record("append", lambda: client.append("a", "1"))
    record("prepend", lambda: client.prepend("a", "0"))
    record("append missing", lambda: client.append("missing", "1"))
    record("get", lambda: client.get("a"))
    record("gets", lambda: client.gets("a"))
    record("cas", lambda: client.cas("a", "new"))
    record("cas without gets", lambda: client.cas("a", "newer"))
    record("gets b", lambda: client.gets("b"))
    record("set b behind the cas", lambda: client.set("b", "changed"))
    record("cas stale", lambda: client.cas("b", "stale"))
    record("get after cas", lambda: client.get_multi(["a", "b"]))
    record("touch", lambda: client.touch("a", 100))
    record("touch missing", lambda: client.touch("missing", 100))
    record("set int", lambda: client.set("n", 10))
    record("incr", lambda: client.incr("n", 5))
    record("decr below zero", lambda: client.decr("n", 100))
    record("incr missing", lambda: client.incr("missing"))
    record("incr not a number", lambda: client.incr("a"))
    record("get padded int", lambda: client.get("n"))
    record("set pickled", lambda: client.set("o", {"x": [1, 2]}))
    record("get pickled", lambda: client.get("o"))
    record("set noreply", lambda: client.set("nr", "v", noreply=True))
    record("incr noreply", lambda: client.incr("n", 7, noreply=True))
    record("after noreply", lambda: client.get_multi(["nr", "n"]))
    record("delete noreply", lambda: client.delete("nr", noreply=True))
    record("touch noreply", lambda: client.touch("n", 10, noreply=True))
    record("after delete noreply", lambda: client.get_multi(["nr", "n"]))
    many = {f"m{i}": f"v{i}" for i in range(1000)}
    record("set_multi", lambda: client.set_multi(many))
    record("get_multi", lambda: client.get_multi([*many, "missing"]) == many)
    record("delete_multi noreply", lambda: client.delete_multi(list(many), noreply=True))
    record("set_multi noreply", lambda: client.set_multi({"s1": "1", "s2": "2"}, noreply=True))
    record("get_multi after", lambda: client.get_multi(["m1", "m999", "s1", "s2"]))
    record("set largest", lambda: client.set(BIG, "x" * largest))
    record("get largest", lambda: len(client.get(BIG)))
    record("set one byte more", lambda: client.set(BIG, "x" * (largest + 1)))
    # memcached drops the old value of a key whose set was too large.
    record("get after too large", lambda: client.get(BIG))
    record("set over 1 MB", lambda: client.set(BIG, "x" * ((1 << 20) + 1)))
    record("still answering", lambda: client.get("a"))
    record("delete", lambda: client.delete("a"))
    record("delete missing", lambda: client.delete("a"))
    record("disconnect_all", client.disconnect_all)
    record("after reconnect", lambda: client.get("b"))
    record("flush_all again", client.flush_all)
    record("after flush_all", lambda: client.get_multi(["b", "n", "o"]))
    record("quit_all", client.quit_all)
    return record.results


def test_python_memcached_answers_as_memcached_does(setup: Setup) -> None:
    largest = largest_value(setup.control, flags=16)  # python-memcached's flag for str
    direct = python_memcached_calls(setup.control.port, largest)
    assert direct["set largest"] is True and direct["set one byte more"] is False
    assert_same(direct, python_memcached_calls(setup.proxy.port, largest))
    assert_keys_on_both(setup.pool)


def test_python_memcached_stats_and_flush_all_through_the_proxy(setup: Setup) -> None:
    for port in (setup.control.port, setup.proxy.port):
        _python_memcached(port).set_multi({f"k{i}": "v" for i in range(50)})
    direct = _python_memcached(setup.control.port)
    assert direct.get_stats("items")[0][1] and direct.get_slab_stats()[0][1]

    client = _python_memcached(setup.proxy.port)
    ((name, stats),) = client.get_stats()
    assert name == f"127.0.0.1:{setup.proxy.port} (1)"
    assert stats["pid"] == str(setup.proxy.process.pid)  # the proxy's stats, not a server's
    assert stats["version"] == SERVER_VERSION
    # memcached's per-server groups are answered empty, and the connection stays in step.
    assert client.get_stats("items") == [(name, {})]
    assert client.get_stats("slabs") == [(name, {})]
    assert client.get_slab_stats() == [(name, {})]
    assert client.get("k1") == "v"

    # One flush_all through the proxy empties every server of the pool.
    assert_keys_on_both(setup.pool)
    client.flush_all()
    for server in setup.pool:
        with connect(server.port) as raw:
            assert stats_on(raw)["cmd_flush"] == "1"
    assert client.get_multi([f"k{i}" for i in range(50)]) == {}


# -- asyncio clients -------------------------------------------------------------------


async def aiomcache_calls(port: int, largest: int) -> dict[str, object]:
    client = aiomcache.Client("127.0.0.1", port, pool_size=4)
    record = Recorder()
    await record.wait("flush_all", client.flush_all())
    await record.wait("set", client.set(b"a", b"x"))
    await record.wait("add existing", client.add(b"a", b"y"))
    await record.wait("add", client.add(b"b", b"y"))
    await record.wait("replace missing", client.replace(b"missing", b"q"))
    await record.wait("append", client.append(b"a", b"1"))
    await record.wait("prepend", client.prepend(b"a", b"0"))
    await record.wait("get", client.get(b"a"))
    value, token = await client.gets(b"a")
    record("gets", lambda: value)
    assert token is not None
    await record.wait("cas", client.cas(b"a", b"new", token))
    await record.wait("cas stale", client.cas(b"a", b"newer", token))
    await record.wait("multi_get", client.multi_get(b"a", b"b", b"missing"))
    await record.wait("touch", client.touch(b"a", 100))
    await record.wait("touch missing", client.touch(b"missing", 100))
    await record.wait("set int", client.set(b"n", b"10"))
    await record.wait("incr", client.incr(b"n", 5))
    await record.wait("decr below zero", client.decr(b"n", 100))
    await record.wait("incr missing", client.incr(b"missing"))
    await record.wait("incr not a number", client.incr(b"a"))
    keys = [b"m%d" % i for i in range(1000)]
    await record.wait("concurrent sets", asyncio.gather(*(client.set(k, k) for k in keys)))
    await record.wait("multi_get 1000", client.multi_get(*keys))
    await record.wait("concurrent gets", asyncio.gather(*(client.get(k) for k in keys[:300])))
    await record.wait("set largest", client.set(BIG.encode(), b"x" * largest))
    await record.wait("set one byte more", client.set(BIG.encode(), b"x" * (largest + 1)))
    await record.wait("get after too large", client.get(BIG.encode()))
    await record.wait("delete", client.delete(b"a"))
    await record.wait("delete missing", client.delete(b"a"))
    await record.wait("flush_all again", client.flush_all())
    await record.wait("after flush_all", client.multi_get(b"b", b"n", *keys[:10]))
    await client.close()
    return record.results


def test_aiomcache_answers_as_memcached_does(setup: Setup) -> None:
    largest = largest_value(setup.control)
    direct = run_async(aiomcache_calls(setup.control.port, largest))
    assert direct["set largest"] is True
    assert_same(direct, run_async(aiomcache_calls(setup.proxy.port, largest)))
    assert_keys_on_both(setup.pool)


async def aiomcache_about_the_server(port: int) -> dict[str, object]:
    client = aiomcache.Client("127.0.0.1", port)
    await client.set(b"k", b"v")
    stats = await client.stats()  # sent as "stats " with a space
    about: dict[str, object] = {
        "version": await client.version(),
        "pid": stats[b"pid"],
        "items": await client.stats(b"items"),
        "still answering": await client.get(b"k"),
    }
    await client.close()
    return about


def test_aiomcache_stats_and_version_through_the_proxy(setup: Setup) -> None:
    direct = run_async(aiomcache_about_the_server(setup.control.port))
    assert direct["items"] and direct["still answering"] == b"v"
    assert run_async(aiomcache_about_the_server(setup.proxy.port)) == {
        "version": SERVER_VERSION.encode(),
        "pid": str(setup.proxy.process.pid).encode(),
        "items": {},
        "still answering": b"v",
    }


async def emcache_calls(port: int, largest: int, autobatching: bool) -> dict[str, object]:
    node = emcache.MemcachedHostAddress("127.0.0.1", port)
    client = await emcache.create_client([node], timeout=10, autobatching=autobatching)
    record = Recorder()
    await record.wait("flush_all", client.flush_all(node))
    await record.wait("set with flags", client.set(b"a", b"x", flags=3))
    await record.wait("add existing", client.add(b"a", b"y"))
    await record.wait("add", client.add(b"b", b"y"))
    await record.wait("replace missing", client.replace(b"missing", b"q"))
    await record.wait("append", client.append(b"a", b"1"))
    await record.wait("prepend", client.prepend(b"a", b"0"))
    await record.wait("get with flags", client.get(b"a", return_flags=True))
    item = await client.gets(b"a")
    assert item is not None and item.cas is not None
    await record.wait("cas", client.cas(b"a", b"new", item.cas))
    await record.wait("cas stale", client.cas(b"a", b"newer", item.cas))
    await record.wait("get_many", client.get_many([b"a", b"b", b"missing"]))
    await record.wait("gat", client.gat(100, b"a"))
    await record.wait("gat_many", client.gat_many(100, [b"a", b"b", b"missing"]))
    await record.wait("touch", client.touch(b"a", 100))
    await record.wait("touch missing", client.touch(b"missing", 100))
    await record.wait("set int", client.set(b"n", b"10"))
    await record.wait("increment", client.increment(b"n", 5))
    await record.wait("decrement below zero", client.decrement(b"n", 100))
    await record.wait("increment missing", client.increment(b"missing", 1))
    await record.wait("increment not a number", client.increment(b"a", 1))
    await record.wait("set noreply", client.set(b"nr", b"v", noreply=True))
    await record.wait("increment noreply", client.increment(b"n", 7, noreply=True))
    await record.wait("after noreply", client.get_many([b"nr", b"n"]))
    await record.wait("delete noreply", client.delete(b"nr", noreply=True))
    await record.wait("touch noreply", client.touch(b"n", 10, noreply=True))
    await record.wait("after delete noreply", client.get_many([b"nr", b"n"]))
    keys = [b"m%d" % i for i in range(500)]
    await record.wait("concurrent sets", asyncio.gather(*(client.set(k, k) for k in keys)))
    await record.wait("concurrent gets", asyncio.gather(*(client.get(k) for k in keys)))
    await record.wait("get_many 500", client.get_many(keys))
    await record.wait("set largest", client.set(BIG.encode(), b"x" * largest))
    await record.wait("set one byte more", client.set(BIG.encode(), b"x" * (largest + 1)))
    await record.wait("get after too large", client.get(BIG.encode()))
    await record.wait("delete", client.delete(b"a"))
    await record.wait("delete missing", client.delete(b"a"))
    await record.wait("verbosity", client.verbosity(node, 1))
    await record.wait("cache_memlimit", client.cache_memlimit(node, 64))
    await record.wait("flush_all noreply", client.flush_all(node, noreply=True))
    await record.wait("after flush_all", client.get_many([b"b", b"n", *keys[:10]]))
    await client.close()
    return record.results


@pytest.mark.parametrize("autobatching", [False, True], ids=["plain", "autobatching"])
def test_emcache_answers_as_memcached_does(setup: Setup, autobatching: bool) -> None:
    largest = largest_value(setup.control)
    direct = run_async(emcache_calls(setup.control.port, largest, autobatching))
    assert direct["set largest"] is None and direct["get with flags"] is not None
    assert_same(direct, run_async(emcache_calls(setup.proxy.port, largest, autobatching)))
    assert_keys_on_both(setup.pool)


async def emcache_about_the_server(port: int) -> dict[str, object]:
    node = emcache.MemcachedHostAddress("127.0.0.1", port)
    client = await emcache.create_client([node], timeout=10)
    about: dict[str, object] = {
        "version": await client.version(node),
        "pid": (await client.stats(node))["pid"],
    }
    await client.close()
    return about


def test_emcache_reads_the_proxys_version_and_stats(setup: Setup) -> None:
    # emcache splits the version line in two words: a version with a space breaks it.
    assert run_async(emcache_about_the_server(setup.proxy.port)) == {
        "version": SERVER_VERSION,
        "pid": str(setup.proxy.process.pid),
    }


# -- pylibmc (libmemcached) ------------------------------------------------------------


def pylibmc_calls(port: int, largest: int, behaviors: dict[str, Any]) -> dict[str, object]:
    client = pylibmc.Client([f"127.0.0.1:{port}"], behaviors={"cas": True, **behaviors})
    record = Recorder()
    record("flush_all", client.flush_all)
    record("set", lambda: client.set("a", b"x"))
    record("add existing", lambda: client.add("a", b"y"))
    record("add", lambda: client.add("b", b"y"))
    record("replace missing", lambda: client.replace("missing", b"q"))
    record("replace", lambda: client.replace("b", b"yy"))
    record("append", lambda: client.append("a", b"1"))
    record("prepend", lambda: client.prepend("a", b"0"))
    record("append missing", lambda: client.append("missing", b"1"))
    record("get", lambda: client.get("a"))
    record("gets", lambda: client.gets("a")[0])
    record("cas", lambda: client.cas("a", b"new", client.gets("a")[1]))
    record("cas stale", lambda: client.cas("a", b"newer", 12345))
    record("touch", lambda: client.touch("a", 100))
    record("touch missing", lambda: client.touch("missing", 100))
    record("set int", lambda: client.set("n", 10))
    record("incr", lambda: client.incr("n", 5))
    record("decr below zero", lambda: client.decr("n", 100))
    record("incr missing", lambda: client.incr("missing"))
    record("incr not a number", lambda: client.incr("a"))
    record("set pickled", lambda: client.set("o", {"x": [1, 2]}))
    record("get pickled", lambda: client.get("o"))
    many = {f"m{i}": b"v%d" % i for i in range(1000)}
    record("set_multi", lambda: client.set_multi(many))
    record("get_multi", lambda: client.get_multi([*many, "missing"]) == many)
    record("incr_multi", lambda: client.incr_multi(["n", "missing"], delta=3))
    record("delete_multi", lambda: client.delete_multi([*many, "missing"]))
    record("get_multi after", lambda: client.get_multi(["m1", "m999", "n"]))
    record("set largest", lambda: client.set(BIG, b"x" * largest))
    record("get largest", lambda: len(client.get(BIG)))
    record("set one byte more", lambda: client.set(BIG, b"x" * (largest + 1)))
    record("get after too large", lambda: client.get(BIG))
    record("delete", lambda: client.delete("a"))
    record("delete missing", lambda: client.delete("a"))
    record("disconnect_all", client.disconnect_all)
    record("after reconnect", lambda: client.get("b"))
    record("flush_all again", client.flush_all)
    record("after flush_all", lambda: client.get_multi(["b", "n", "o"]))
    return record.results


@pytest.mark.parametrize(
    "behaviors",
    [{}, {"no_block": True, "buffer_requests": True, "tcp_nodelay": True}],
    ids=["blocking", "no_block, buffered"],
)
def test_pylibmc_answers_as_memcached_does(setup: Setup, behaviors: dict[str, Any]) -> None:
    largest = largest_value(setup.control)
    direct = pylibmc_calls(setup.control.port, largest, behaviors)
    # Buffered writes answer "buffered" (an error to pylibmc) without waiting for a reply.
    assert direct["get largest"] == largest and direct["get after too large"] is None
    assert_same(direct, pylibmc_calls(setup.proxy.port, largest, behaviors))
    assert_keys_on_both(setup.pool)


def test_pylibmc_reads_the_proxys_stats(setup: Setup) -> None:
    client = pylibmc.Client([f"127.0.0.1:{setup.proxy.port}"])
    ((_, stats),) = client.get_stats()
    assert stats["pid"] == str(setup.proxy.process.pid).encode()
    assert stats["version"] == SERVER_VERSION.encode()


# -- pymemcache's HashClient and PooledClient -----------------------------------------


def pymemcache_calls(client: HashClient | PooledClient, largest: int) -> dict[str, object]:
    record = Recorder()
    record("flush_all", lambda: client.flush_all(noreply=False))
    record("set", lambda: client.set("a", b"x", noreply=False))
    record("add existing", lambda: client.add("a", b"y", noreply=False))
    record("add", lambda: client.add("b", b"y", noreply=False))
    record("replace missing", lambda: client.replace("missing", b"q", noreply=False))
    record("append", lambda: client.append("a", b"1", noreply=False))
    record("prepend", lambda: client.prepend("a", b"0", noreply=False))
    record("get", lambda: client.get("a"))
    record("gets", lambda: client.gets("a")[0])
    record("cas", lambda: client.cas("a", b"new", client.gets("a")[1], noreply=False))
    record("cas stale", lambda: client.cas("a", b"newer", b"12345", noreply=False))
    record("cas missing", lambda: client.cas("missing", b"newer", b"12345", noreply=False))
    record("touch", lambda: client.touch("a", 100, noreply=False))
    record("touch missing", lambda: client.touch("missing", 100, noreply=False))
    record("gat", lambda: client.gat("a", 100))
    record("set int", lambda: client.set("n", b"10", noreply=False))
    record("incr", lambda: client.incr("n", 5))
    record("decr below zero", lambda: client.decr("n", 100))
    record("incr missing", lambda: client.incr("missing", 1))
    record("incr not a number", lambda: client.incr("a", 1))
    record("set pickled", lambda: client.set("o", {"x": [1, 2]}))
    record("get pickled", lambda: client.get("o"))
    many = {f"m{i}": b"v%d" % i for i in range(1000)}
    record("set_many", lambda: client.set_many(many, noreply=False))
    record("get_many", lambda: client.get_many([*many, "missing"]) == many)
    record("gets_many", lambda: sorted(client.gets_many([*many, "missing"])) == sorted(many))
    record("delete_many", lambda: client.delete_many([*many, "missing"], noreply=False))
    record("set_many noreply", lambda: client.set_many({"s1": b"1", "s2": b"2"}))
    record("get_many after", lambda: client.get_many(["m1", "m999", "s1", "s2"]))
    record("set largest", lambda: client.set(BIG, b"x" * largest, noreply=False))
    record("set one byte more", lambda: client.set(BIG, b"x" * (largest + 1), noreply=False))
    record("get after too large", lambda: client.get(BIG))
    record("delete", lambda: client.delete("a", noreply=False))
    record("delete missing", lambda: client.delete("a", noreply=False))
    record("flush_all again", lambda: client.flush_all(noreply=False))
    record("after flush_all", lambda: client.get_many(["b", "n", "o"]))
    return record.results


def _hash_client(ports: tuple[int, ...]) -> HashClient:
    servers = [("127.0.0.1", port) for port in ports]
    return HashClient(servers, serde=serde.pickle_serde, timeout=10, connect_timeout=5)


def test_pymemcache_hash_client_across_two_proxies(
    setup: Setup, memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """A HashClient over two memcached, and over two proxies in front of one pool."""
    second = memcached_factory()
    largest = largest_value(setup.control)
    direct = pymemcache_calls(_hash_client((setup.control.port, second.port)), largest)
    assert direct["set largest"] is True
    pool = pool_config(setup.pool[0].address, setup.pool[1].address)
    other_proxy = proxy_factory(pool, "--enable-flush-cmd")
    routed = pymemcache_calls(_hash_client((setup.proxy.port, other_proxy.port)), largest)
    assert_same(direct, routed)
    assert_keys_on_both(setup.pool)


def _pooled_client(port: int) -> PooledClient:
    return PooledClient(("127.0.0.1", port), serde=serde.pickle_serde, max_pool_size=8, timeout=10)


def pooled_threads(client: PooledClient) -> list[object]:
    """Eight threads, each with its own pooled connection, setting and reading back."""

    def worker(thread: int) -> object:
        keys = {f"t{thread}-{i}": b"%d" % i for i in range(200)}
        client.set_many(keys, noreply=False)
        return client.get_many(list(keys)) == keys and client.incr(f"t{thread}-5", 1)

    with ThreadPoolExecutor(8) as threads:
        return list(threads.map(worker, range(8)))


def test_pymemcache_pooled_client_answers_as_memcached_does(setup: Setup) -> None:
    direct_client, routed_client = (
        _pooled_client(setup.control.port),
        _pooled_client(setup.proxy.port),
    )
    largest = largest_value(setup.control)
    direct = pymemcache_calls(direct_client, largest)
    assert direct["set largest"] is True
    assert_same(direct, pymemcache_calls(routed_client, largest))
    assert pooled_threads(direct_client) == pooled_threads(routed_client) == [6] * 8
    assert_keys_on_both(setup.pool)

    assert routed_client.stats()[b"pid"] == setup.proxy.process.pid
    assert routed_client.stats("items") == {}
    assert routed_client.version() == SERVER_VERSION.encode()


def test_clients_get_mcrouters_refusal_of_flush_all_without_the_flag(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """mcrouter refuses flush_all unless --enable-flush-cmd; each client reports it."""
    proxy = proxy_factory(pool_config(memcached.address))
    pooled = _pooled_client(proxy.port)
    pooled.set("kept", b"v", noreply=False)
    with pytest.raises(MemcacheServerError, match="Command disabled"):
        pooled.flush_all(noreply=False)
    node = emcache.MemcachedHostAddress("127.0.0.1", proxy.port)

    async def emcache_flush() -> dict[str, object]:
        client = await emcache.create_client([node], timeout=10)
        record = Recorder()
        await record.wait("flush_all", client.flush_all(node))
        await client.close()
        return record.results

    assert "Command disabled" in str(run_async(emcache_flush())["flush_all"])
    with pytest.raises(pylibmc.Error, match="SERVER ERROR"):
        pylibmc.Client([f"127.0.0.1:{proxy.port}"]).flush_all()
    assert pooled.get("kept") == b"v"
