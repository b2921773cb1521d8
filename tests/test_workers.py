"""`--num-proxies N`: worker processes sharing the ports, supervised by the parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing

from conftest import Client, Memcached, Proxy, free_port, pool_config, stats_on

ProxyFactory = Callable[..., Proxy]


def worker_pid(port: int) -> int:
    """The pid of the worker that accepted a new connection (from `stats`)."""
    with closing(Client(port)) as client:
        return int(stats_on(client)["pid"])


def pids_seen(port: int, connections: int = 24) -> set[int]:
    return {worker_pid(port) for _ in range(connections)}


def workers_seen(port: int, workers: int, seconds: float = 10) -> set[int]:
    """The worker pids seen on new connections, until `workers` of them have answered.

    The port accepts as soon as the first worker listens; the others may still be
    starting, and until they listen the kernel gives every connection to that one."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while len(seen) < workers and time.monotonic() < deadline:
        seen |= pids_seen(port, 12)
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connections_spread_over_workers_that_share_the_servers(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "2")
    workers = workers_seen(proxy.port, 2)
    assert len(workers) == 2, workers
    assert proxy.process.pid not in workers  # the parent only supervises
    with closing(Client(proxy.port)) as writer:
        assert writer.call(b"set shared 0 0 2\r\nok\r\n") == b"STORED\r\n"
    for _ in range(8):  # whichever worker answers, it reaches the same memcached
        with closing(Client(proxy.port)) as reader:
            assert reader.call(b"get shared\r\n", b"END\r\n") == (
                b"VALUE shared 0 2\r\nok\r\nEND\r\n"
            )


def test_sigterm_stops_every_worker(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "3")
    workers = workers_seen(proxy.port, 3)
    assert len(workers) == 3, workers
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=10) == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", proxy.port)) != 0


def test_a_worker_that_dies_is_replaced(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "2")
    before = workers_seen(proxy.port, 2)
    assert len(before) == 2, before
    victim = min(before)
    time.sleep(1.5)  # a worker dying in its first second counts as a failed start
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    after: set[int] = set()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        after = pids_seen(proxy.port, 12)
        if len(after) == 2 and victim not in after:
            break
    assert victim not in after and len(after) == 2, (before, after)
    assert "exited with status -9" in proxy.log()


def test_a_port_in_use_stops_every_worker(memcached: Memcached, tmp_path: object) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        command = [
            sys.executable, "-m", "mcrouter_trio", "-p", str(port), "--listen-addresses",
            "127.0.0.1", "--config-str", json.dumps(pool_config(memcached.address)),
            "--num-proxies", "2",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, timeout=20)
    assert result.returncode == 2
    assert b"cannot start" in result.stderr


def sets_on_both_workers(port: int, count: int) -> set[int]:
    """`count` sets, each on a new connection; the pids of the workers that served them."""
    pids = set()
    for index in range(count):
        with closing(Client(port)) as client:
            assert client.call(b"set spread%d 0 0 1\r\nx\r\n" % index) == b"STORED\r\n"
            pids.add(int(stats_on(client)["pid"]))
    assert len(pids) == 2, pids  # 24 connections: all on one worker is ~1e-7
    return pids


def wait_for_stats(port: int, wanted: dict[str, str], pids: set[int]) -> None:
    """Until every worker in `pids` answers `stats` with the `wanted` values."""
    deadline = time.monotonic() + 10
    agreed: set[int] = set()
    seen: dict[str, str] = {}
    while agreed != pids and time.monotonic() < deadline:
        with closing(Client(port)) as client:
            seen = stats_on(client)
        if all(seen[name] == value for name, value in wanted.items()):
            agreed.add(int(seen["pid"]))
        else:
            agreed.discard(int(seen["pid"]))
            time.sleep(0.1)
    assert agreed == pids, (wanted, seen)


def test_stats_add_up_the_counters_of_every_worker(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "2")
    pids = sets_on_both_workers(proxy.port, 24)
    # Each worker served only part of the sets: either one answering 24 has added them up.
    wait_for_stats(proxy.port, {"cmd_set": "24", "num_proxies": "2"}, pids)
    with closing(Client(proxy.port)) as client:
        servers = client.call(b"stats servers\r\n", b"END\r\n")
    assert b" requests:24 replies:24 errors:0 connects:2 " in servers, servers


def test_stats_reset_reaches_every_worker(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--proxy-threads", "2")
    pids = sets_on_both_workers(proxy.port, 24)
    wait_for_stats(proxy.port, {"cmd_set": "24"}, pids)
    with closing(Client(proxy.port)) as client:
        assert client.call(b"stats reset\r\n") == b"RESET\r\n"
    wait_for_stats(proxy.port, {"cmd_set": "0"}, pids)
    with closing(Client(proxy.port)) as client:
        assert client.call(b"set after 0 0 1\r\nx\r\n") == b"STORED\r\n"
    wait_for_stats(proxy.port, {"cmd_set": "1"}, pids)


def test_num_proxies_auto_runs_one_worker_per_usable_core(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "--num-proxies", "auto")
    cores = len(os.sched_getaffinity(0))
    with closing(Client(proxy.port)) as client:
        assert stats_on(client)["num_proxies"] == str(cores)
    if cores > 1:
        assert len(workers_seen(proxy.port, cores)) == cores
    else:
        assert pids_seen(proxy.port) == {proxy.process.pid}
