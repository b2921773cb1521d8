"""Ejection end to end: a ketama pool of three real memcached, one of them killed.

The proxy runs the config `import-twemproxy` makes of a nutcracker pool with
`auto_eject_hosts`. After the failure limit, the dead server's keys are stored on the
other two without an error and every other key stays where it was; the placement is
the one a running nutcracker, configured the same way with the same server down,
chooses. Restarted, the server is probed after the retry time and its keys go back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Memcached, Proxy, _stop, connect, poll
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
