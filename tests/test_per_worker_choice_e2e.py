"""LatestRoute's `thread_local_failover` through the real command with `--num-proxies 2`.

Each worker is one of mcrouter's proxy threads: its index is mixed into the choice
of servers, so the two workers write to the servers mcrouter's threads 0 and 1
would (the choice itself is checked against a reference in test_per_host_choice).
The kernel spreads new connections over the workers (SO_REUSEPORT); `stats` tells
which worker, by pid, served a connection.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Memcached, Proxy, connect, direct_get, poll, stats_on

from mcrouter_trio.hashing._per_host import latest_order
from mcrouter_trio.ops._host import local_host_id

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

SERVERS = 4


def latest_config(servers: list[Memcached], salt: str) -> str:
    route = {
        "type": "LatestRoute",
        "children": "Pool|A",
        "failover_count": 1,
        "thread_local_failover": True,
        "salt": salt,
    }
    return json.dumps({"pools": {"A": {"servers": [s.address for s in servers]}}, "route": route})


def worker_picks(host_id: int, salt: str) -> tuple[int, int]:
    """The server mcrouter's proxy threads 0 and 1 pick (failover_count 1)."""
    first, second = (latest_order(host_id, [1.0] * SERVERS, 1, salt, thread_id=k) for k in (0, 1))
    return first[0], second[0]


def salt_where(host_id: int, wanted: Callable[[tuple[int, int]], bool]) -> str:
    return next(s for s in map(str, range(1000)) if wanted(worker_picks(host_id, s)))


def writes_by_worker(
    proxy: Proxy, servers: list[Memcached], tag: str, connections: int = 24
) -> dict[int, set[int]]:
    """A set per new connection; for each worker pid, the servers that received its sets.

    At least `connections` connections, more (up to 200) until both workers served
    some. Each connection also asks `route(set,key)`: the answering worker must name
    the server its set reached.
    """
    holders: dict[int, set[int]] = {}
    index = 0
    while index < connections or (len(holders) < 2 and index < 200):
        index += 1
        key = f"{tag}{index}".encode()
        with connect(proxy.port) as client:
            assert client.call(b"set %s 0 0 1\r\nx\r\n" % key) == b"STORED\r\n"
            pid = int(stats_on(client)["pid"])
            admin = b"get __mcrouter__.route(set,%s)\r\n" % key
            routed = client.call(admin, b"END\r\n").split(b"\r\n")[1].decode()
        (holder,) = [s for s in servers if direct_get(s, key) != b"END\r\n"]
        assert routed == holder.address, (routed, holder.address)
        holders.setdefault(pid, set()).add(holder.port)
    return holders


def test_each_worker_writes_to_its_own_latest_server_across_a_reload(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(SERVERS)]
    host_id = local_host_id()  # what the proxy computes at start
    salt = salt_where(host_id, lambda picks: picks[0] != picks[1])
    proxy = proxy_factory(latest_config(servers, salt), "--num-proxies", "2")
    with connect(proxy.port) as client:
        hostid = client.call(b"get __mcrouter__.hostid\r\n", b"END\r\n").split(b"\r\n")[1]
    assert int(hostid) == host_id

    picks = worker_picks(host_id, salt)
    holders = writes_by_worker(proxy, servers, "before")
    assert len(holders) == 2, holders
    assert sorted(map(sorted, holders.values())) == sorted([servers[p].port] for p in picks)

    # A new salt that moves at least one worker: each worker reloads and picks anew.
    new_salt = salt_where(host_id, lambda new: new[0] != new[1] and new != picks)
    config_file = proxy.log_path.parent / f"config-{proxy.port}.json"
    Path(config_file).write_text(latest_config(servers, new_salt))
    assert poll(lambda: proxy.log().count("config reloaded") == 2, 10), proxy.log()
    new_picks = worker_picks(host_id, new_salt)
    holders = writes_by_worker(proxy, servers, "after")
    assert len(holders) == 2, holders
    assert sorted(map(sorted, holders.values())) == sorted([servers[p].port] for p in new_picks)


def test_route_subcommand_routes_as_the_worker_named(tmp_path: Path) -> None:
    addresses = [f"127.0.0.1:{21000 + index}" for index in range(SERVERS)]
    host_id = local_host_id()
    salt = salt_where(host_id, lambda picks: picks[0] != picks[1])
    route = {
        "type": "LatestRoute",
        "children": "Pool|A",
        "failover_count": 1,
        "thread_local_failover": True,
        "salt": salt,
    }
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"pools": {"A": {"servers": addresses}}, "route": route}))

    def routed(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mcrouter_trio", "route", "-f", str(path), *flags, "k"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    picks = worker_picks(host_id, salt)
    for worker, pick in enumerate(picks):
        result = routed("--num-proxies", "2", "--worker", str(worker))
        assert result.stdout == f"k: {addresses[pick]}\n", result.stderr
    assert routed().stdout == f"k: {addresses[picks[0]]}\n"
    refused = routed("--num-proxies", "2", "--worker", "2")
    assert refused.returncode == 2 and "--worker 2" in refused.stderr
