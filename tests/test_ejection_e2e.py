"""Ejection end to end: a ketama pool of three real memcached, one of them killed.

The proxy runs the config `import-twemproxy` makes of a nutcracker pool with
`auto_eject_hosts`. After the failure limit, the dead server's keys are stored on the
other two without an error and every other key stays where it was; the placement is
the one a running nutcracker, configured the same way with the same server down,
chooses. Restarted, the server is probed after the retry time and its keys go back.

Reloads (a rewritten config, SIGHUPs) keep an unchanged pool's ejected server out, with
one prober however many trees there were, and the ejection shows in `stats`, `stats
servers` and the metrics.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from conftest import (
    Client,
    Memcached,
    Proxy,
    _stop,
    connect,
    direct_get,
    free_port,
    poll,
    stats_on,
)
from test_metrics import scrape
from test_twemproxy_e2e import holders, imported_config, make_keys, set_all, start_nutcracker

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]
KEYS = 3000
LIMIT = 2


def provoke_ejection(port: int, keys: list[bytes]) -> list[bytes]:
    """Gets one at a time until the dead server's failures have ejected it; the errors."""
    errors = []
    with connect(port) as client:
        for key in keys:
            reply = client.call(b"get " + key + b"\r\n")
            if reply.startswith(b"SERVER_ERROR"):
                errors.append(reply)
                if len(errors) == LIMIT:
                    break
    return errors


def test_a_killed_server_leaves_the_ring_as_in_nutcracker_and_comes_back(
    tmp_path: Path, memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    pool: dict[str, Any] = {
        "hash": "md5",
        "distribution": "ketama",
        "timeout": 2000,
        "auto_eject_hosts": "true",
        "server_failure_limit": LIMIT,
        "server_retry_timeout": 600000,
        "servers": [f"{server.address}:1" for server in servers],
    }
    keys = make_keys(KEYS, seed=13)
    # The proxy, as imported, but probing again after 0.5 s instead of 10 minutes.
    config = json.loads(re.sub(r"(?m)^//.*$", "", imported_config_for(tmp_path, pool)))
    assert config["pools"]["pool"]["auto_eject_hosts"] is True
    config["pools"]["pool"]["server_retry_timeout"] = 500
    proxy = proxy_factory(config, "-r", "200")
    set_all(proxy.port, keys, b"a")
    before = holders(servers, keys, b"a")
    assert set(before) == {0, 1, 2}

    servers[1].stop()
    errors = provoke_ejection(proxy.port, keys)
    assert len(errors) == LIMIT
    assert poll(lambda: "ejected after 2 failures" in proxy.log(), 5)
    set_all(proxy.port, keys, b"t")  # every key stored, none refused
    after = holders_but(servers, 1, keys, b"t")
    for key, was, now in zip(keys, before, after, strict=True):
        if was == 1:
            assert now in (0, 2), key
        else:
            assert now == was, key

    # nutcracker, same pool, same server down, ejects it the same way.
    nutcracker, port = start_nutcracker(tmp_path, pool)
    try:
        assert len(provoke_ejection(port, keys)) >= 1
        set_all(port, keys, b"n")
        assert holders_but(servers, 1, keys, b"n") == after
    finally:
        _stop(nutcracker)

    servers[1].restart()
    moved = [key for key, was in zip(keys, before, strict=True) if was == 1]

    attempts = iter(range(10_000))

    def back() -> bool:
        value = b"r%d" % next(attempts)  # a new value each time: old copies stay behind
        set_all(proxy.port, moved[:1], value)
        return holders(servers, moved[:1], value) == [1]

    assert poll(back, 20)
    assert "answered its probe and is back in the ring" in proxy.log()
    set_all(proxy.port, keys, b"b")
    assert holders(servers, keys, b"b") == before


def holders_but(servers: list[Memcached], down: int, keys: list[bytes], value: bytes) -> list[int]:
    """`holders` over every server but the one that is `down` (indexes kept)."""
    up = [index for index in range(len(servers)) if index != down]
    found = holders([servers[index] for index in up], keys, value)
    return [-1 if at == -1 else up[at] for at in found]


def imported_config_for(tmp_path: Path, pool: dict[str, Any]) -> str:
    """Write nutcracker's YAML (as start_nutcracker does) and import it."""
    nutcracker, _ = start_nutcracker(tmp_path, pool)
    _stop(nutcracker)
    return imported_config(tmp_path)


def reloaded(proxy: Proxy, count: int) -> bool:
    return proxy.log().count("config reloaded") >= count


def server_fields(client: Client, server: Memcached) -> dict[str, str]:
    """The `stats servers` fields of `server` (after the state)."""
    raw = client.call(b"stats servers\r\n", b"END\r\n").decode()
    (line,) = [line for line in raw.splitlines() if line.startswith(f"STAT {server.address}:")]
    after_state = line.split("; ", 1)[1]
    return dict(field.split(":", 1) for field in after_state.split(" "))


def sends_to(client: Client, server: Memcached) -> int:
    """Requests routed to `server`, sent or failed fast: with no client traffic, probes."""
    fields = server_fields(client, server)
    return int(fields["requests"]) + int(fields["failed_fast"])


def test_an_ejected_server_stays_out_across_reloads_with_one_prober(
    tmp_path: Path, memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    retry_s = 0.3
    pool = {
        "servers": [server.address for server in servers],
        "auto_eject_hosts": True,
        "server_failure_limit": LIMIT,
        "server_retry_timeout": int(retry_s * 1000),
    }
    config = {"pools": {"A": pool}, "route": "PoolRoute|A"}
    metrics_port = free_port()
    proxy = proxy_factory(
        config,
        "--reconfiguration-delay-ms", "0", "--disable-tko-tracking",
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    keys = make_keys(600, seed=5)
    set_all(proxy.port, keys, b"a")
    before = holders(servers, keys, b"a")
    dead = servers[1]
    dead.stop()
    assert len(provoke_ejection(proxy.port, keys)) == LIMIT
    assert poll(lambda: "ejected after 2 failures" in proxy.log(), 5)

    # Reloads: the config rewritten (same pools, a comment more), then SIGHUPs.
    path = tmp_path / f"config-{proxy.port}.json"
    path.write_text("// rewritten\n" + json.dumps(config))
    for count in range(1, 6):
        if count > 1:
            proxy.process.send_signal(signal.SIGHUP)
        assert poll(partial(reloaded, proxy, count), 10)

    # The dead server's keys are still served by the others, with no error.
    with connect(proxy.port) as client:
        for key in keys:
            assert client.call(b"set " + key + b" 0 0 1\r\nr\r\n") == b"STORED\r\n", key
            reply = client.call(b"get " + key + b"\r\n", b"END\r\n")
            assert reply == b"VALUE " + key + b" 0 1\r\nr\r\nEND\r\n", key
        fields = server_fields(client, dead)
        assert (fields["ejections"], fields["ejected"]) == ("1", "1")
        assert stats_on(client)["server_ejects"] == "1"
        _, metrics = scrape(metrics_port)
        for metric in ("mcrouter_server_ejected", "mcrouter_server_ejections_total"):
            labels = rf'\{{[^}}]*server="{dead.address}"[^}}]*\}}'
            assert re.search(rf"\n{metric}{labels} 1\.0\n", metrics), metric
        assert "\nmcrouter_server_ejects_total 1.0\n" in metrics

        # One prober: no more probes than one per retry period (6 trees would make 6 each).
        assert poll(lambda: sends_to(client, dead) > 0, 5)
        start, started = sends_to(client, dead), time.monotonic()
        assert poll(lambda: sends_to(client, dead) >= start + 3, 10)
        time.sleep(1.0)
        probes, elapsed = sends_to(client, dead) - start, time.monotonic() - started
        assert probes <= elapsed / retry_s + 1, (probes, elapsed)

        dead.restart()
        moved = [key for key, was in zip(keys, before, strict=True) if was == 1]
        assert poll(lambda: server_fields(client, dead)["ejected"] == "0", 10)
        set_all(proxy.port, keys, b"b")
        assert holders(servers, keys, b"b") == before
        assert moved and direct_get(dead, moved[0]).startswith(b"VALUE")
        assert server_fields(client, dead)["ejections"] == "1"
        assert stats_on(client)["server_ejects"] == "1"
    assert proxy.log().count("ejected after") == 1
    assert proxy.log().count("answered its probe and is back in the ring") == 1
