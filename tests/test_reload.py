"""Online reconfiguration through the real command: file changes and SIGHUP, under load.

A proxy started with `-f FILE` reloads when the file changes (or on SIGHUP), swaps
the new route tree in, keeps the connections of servers still in use, closes the
others once idle, and keeps serving the old config when the new one is broken.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from conftest import Client, Memcached, Proxy, connect, direct_get, poll, stats_on

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]


def one_pool(server: Memcached, comment: str = "") -> str:
    config = {"pools": {"A": {"servers": [server.address]}}, "route": "PoolRoute|A"}
    return f"// {comment}\n{json.dumps(config)}"


def config_path(proxy: Proxy) -> Path:
    return proxy.log_path.parent / f"config-{proxy.port}.json"


def reloads(proxy: Proxy) -> int:
    return proxy.log().count("config reloaded")


def reloaded_at_least(proxy: Proxy, count: int) -> bool:
    return reloads(proxy) >= count


def servers_listed(client: Client) -> set[str]:
    raw = client.call(b"stats servers\r\n", b"END\r\n").decode()
    return {
        line.split()[1].rsplit(":", 3)[0] for line in raw.splitlines() if line.startswith("STAT")
    }


def test_an_edited_config_is_swapped_in_and_unused_servers_are_closed(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    first, second = memcached_factory(), memcached_factory()
    proxy = proxy_factory(one_pool(first), "--reconfiguration-delay-ms", "50")
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert servers_listed(client) == {first.address}
        config_path(proxy).write_text(one_pool(second))
        assert poll(lambda: reloads(proxy) == 1, 10), proxy.log()
        # The same client connection, now routed by the new tree.
        assert client.call(b"set k 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert direct_get(second, b"k") == b"VALUE k 0 1\r\n2\r\nEND\r\n"
        assert direct_get(first, b"k") == b"VALUE k 0 1\r\n1\r\nEND\r\n"
        # The first server is no longer used: its idle connection is closed.
        assert poll(lambda: servers_listed(client) == {second.address}, 5)
        assert "no longer in the config; closed" in proxy.log()
        stats = stats_on(client)
        assert stats["config_failures"] == "0"
        assert int(stats["config_age"]) < 60


def test_a_broken_config_is_reported_and_the_old_one_keeps_serving(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(one_pool(memcached), "--reconfiguration-delay-ms", "50")
    broken: dict[str, Any] = {"pools": {"A": {"servers": ["nohost"]}}, "route": "PoolRoute|B"}
    config_path(proxy).write_text(json.dumps(broken))
    with connect(proxy.port) as client:
        assert poll(lambda: stats_on(client)["config_failures"] == "1", 10), proxy.log()
        log = proxy.log()
        assert "config reload failed; the previous config keeps serving" in log
        assert "unknown pool 'B' @ $.route" in log
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
    assert direct_get(memcached, b"k") == b"VALUE k 0 1\r\nv\r\nEND\r\n"


def test_sighup_reloads_and_is_only_logged_when_reloading_is_off(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    reloading = proxy_factory(one_pool(memcached), "--reconfiguration-delay-ms", "0")
    reloading.process.send_signal(signal.SIGHUP)
    assert poll(lambda: reloads(reloading) == 1, 10), reloading.log()
    fixed = proxy_factory(one_pool(memcached), "--disable-reload-configs")
    fixed.process.send_signal(signal.SIGHUP)
    assert poll(lambda: "received SIGHUP: this config is not reloaded" in fixed.log(), 10)
    for proxy in (reloading, fixed):
        assert proxy.process.poll() is None
        with connect(proxy.port) as client:
            assert client.call(b"version\r\n").startswith(b"VERSION ")


def test_a_hundred_reloads_under_load_fail_no_request_and_drop_no_connection(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory(), memcached_factory()]
    proxy = proxy_factory(one_pool(servers[0]), "--reconfiguration-delay-ms", "0")
    stop = threading.Event()
    problems: list[str] = []
    answered = [0]

    def load(client_id: int) -> None:
        try:
            with connect(proxy.port) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    key = b"c%d-%d" % (client_id, n)
                    reply = client.call(b"set " + key + b" 0 0 1\r\nv\r\nget " + key + b"\r\n")
                    if reply != b"STORED\r\n":
                        problems.append(f"set: {reply!r}")
                    reply = client.read_until(b"END\r\n")
                    if reply not in (b"END\r\n", b"VALUE " + key + b" 0 1\r\nv\r\nEND\r\n"):
                        problems.append(f"get: {reply!r}")
                    answered[0] += 1
        except OSError as exc:
            problems.append(f"connection {client_id}: {exc!r}")

    clients = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    try:
        for step in range(1, 101):
            config_path(proxy).write_text(one_pool(servers[step % 2], f"step {step}"))
            if step % 3 == 0:
                proxy.process.send_signal(signal.SIGHUP)
            assert poll(partial(reloaded_at_least, proxy, step), 10), proxy.log()[-2000:]
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert problems == []
    assert answered[0] > 100
    assert proxy.process.poll() is None


def test_a_change_to_an_imported_file_reloads(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    first, second = memcached_factory(), memcached_factory()
    imported = tmp_path / "pools.json"  # the directory the proxy's config is written to
    imported.write_text(json.dumps({"A": {"servers": [first.address]}}))
    config = json.dumps({"pools": "@import(pools.json)", "route": "PoolRoute|A"})
    proxy = proxy_factory(config, "--reconfiguration-delay-ms", "50")
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
    assert direct_get(first, b"k") == b"VALUE k 0 1\r\n1\r\nEND\r\n"
    imported.write_text(json.dumps({"A": {"servers": [second.address]}}))
    assert poll(lambda: reloads(proxy) == 1, 10), proxy.log()
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\n2\r\n") == b"STORED\r\n"
    assert direct_get(second, b"k") == b"VALUE k 0 1\r\n2\r\nEND\r\n"
