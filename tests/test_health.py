"""Destination health, end to end: TKO, fail-fast, probes, reconnect backoff, failover.

Backends are real memcached processes and the fault servers of `test_faults.py`.
What reaches a backend is counted on the backend's side (request lines a fault server
read, connections it accepted) or, for connects nobody can accept, by the proxy's
`connect_failures`; nothing here asserts how long anything took.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import Conn, FaultServer, Memcached, Proxy, connect, free_port, poll, pool_config
from test_faults import CONNECT_ERROR, REPLY_TIMEOUT, TKO_CONNECT_ERROR
from test_routing_e2e import servers_stats

from mcrouter_trio.upstream._health import HealthSettings, ProbeSchedule

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

TKO_TIMEOUT = b"SERVER_ERROR Server unavailable. Reason: mc_res_timeout\r\n"
TKO_CONNECT_TIMEOUT = b"SERVER_ERROR Server unavailable. Reason: mc_res_connect_timeout\r\n"


class Recorder:
    """A fault server that reads requests and never answers, keeping every line read."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._lock = threading.Lock()
        self.server = FaultServer(self._handle)

    def _handle(self, conn: Conn) -> None:
        while (line := conn.readline()) is not None:
            with self._lock:
                self.lines.append(line)

    def seen(self) -> list[bytes]:
        with self._lock:
            return list(self.lines)


@pytest.fixture
def recorder() -> Iterator[Callable[[], Recorder]]:
    started: list[Recorder] = []

    def start() -> Recorder:
        started.append(Recorder())
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            each.server.close()


def server_line(proxy: Proxy, address: str) -> str:
    with connect(proxy.port) as client:
        for key, value in servers_stats(client).items():
            if key.startswith(address + ":"):
                return value
    raise AssertionError(f"no stats servers line for {address}")


def field(line: str, name: str) -> int:
    return int(line.split(f"{name}:")[1].split()[0])


def state_of(line: str) -> str:
    """The state of a `stats servers` value in words: `hard_tko down`, `up`,
    `soft_tko up probing`... (mcrouter's ` hard_tko; ` and `down:1`, our `connecting:1`
    and `probing:1`)."""
    tko = re.findall(r" (hard_tko|soft_tko); ", line)
    states = re.findall(r" (new|up|down|closed):1\b", line)
    own = re.findall(r" (connecting|probing):1\b", line)
    return " ".join([*tko, *states, *own])


# -- the probe schedule (pure) ---------------------------------------------------------


def test_probe_delays_grow_by_half_up_to_the_max_each_jittered_5_to_50_percent() -> None:
    class Fixed:
        def __init__(self, fraction: float) -> None:
            self.fraction = fraction

        def uniform(self, low: float, high: float) -> float:
            return low + (high - low) * self.fraction

    schedule = ProbeSchedule(HealthSettings(probe_delay_initial_ms=1000, probe_delay_max_ms=3000))
    low = [schedule.next_delay(Fixed(0.0)) for _ in range(5)]  # type: ignore[arg-type]
    assert low == pytest.approx([1.05, 1.575, 2.3625, 3.15, 3.15])
    schedule = ProbeSchedule(HealthSettings(probe_delay_initial_ms=1, probe_delay_max_ms=60000))
    high = [schedule.next_delay(Fixed(1.0)) for _ in range(4)]  # type: ignore[arg-type]
    # 1 ms goes to 2 (1 * 1.5 is still 1 in integer ms), then 3, 4: mcrouter's arithmetic.
    assert high == pytest.approx([0.0015, 0.003, 0.0045, 0.006])


# -- TKO: the error strings and fail-fast ---------------------------------------------


def test_soft_tko_after_exactly_n_timeouts_then_nothing_is_sent(
    recorder: Callable[[], Recorder], proxy_factory: ProxyFactory
) -> None:
    hung = recorder()
    proxy = proxy_factory(
        pool_config(hung.server.address), "-t", "200", "--timeouts-until-tko", "2", "-r", "600000"
    )
    with connect(proxy.port) as client:
        assert client.call(b"get a\r\n") == REPLY_TIMEOUT
        assert state_of(server_line(proxy, hung.server.address)) == "closed"
        assert client.call(b"get b\r\n") == REPLY_TIMEOUT
        assert poll(lambda: hung.seen() == [b"get a", b"get b"])
        for key in (b"c", b"d", b"e"):
            assert client.call(b"get " + key + b"\r\n") == TKO_TIMEOUT
        assert client.call(b"set f 0 0 1\r\nx\r\n") == TKO_TIMEOUT
    line = server_line(proxy, hung.server.address)
    assert state_of(line) == "soft_tko closed"
    assert field(line, "failed_fast") == 4
    # None of the four reached the server: it read the two timed-out gets only.
    assert hung.seen() == [b"get a", b"get b"]
    assert hung.server.count("accept") == 2
    with connect(proxy.port) as client:
        suspects = client.call(b"stats suspect_servers\r\n", b"END\r\n")
    assert suspects == (f"STAT {hung.server.address} status:tko num_failures:2\r\nEND\r\n".encode())


def test_a_refused_connect_marks_hard_tko_at_once(proxy_factory: ProxyFactory) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(pool_config(nobody), "-r", "600000")
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n") == CONNECT_ERROR
        for _ in range(20):
            assert client.call(b"get k\r\n") == TKO_CONNECT_ERROR
        assert client.call(b"delete k\r\n") == TKO_CONNECT_ERROR
    line = server_line(proxy, nobody)
    assert state_of(line) == "hard_tko down"
    # One connect, not one per request.
    assert field(line, "connect_failures") == 1
    assert field(line, "failed_fast") == 21


def test_a_connect_timeout_marks_hard_tko(
    unanswered_listener: int, proxy_factory: ProxyFactory
) -> None:
    address = f"127.0.0.1:{unanswered_listener}"
    proxy = proxy_factory(pool_config(address, connect_timeout=200), "-r", "600000")
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n") == b"SERVER_ERROR connection timeout\r\n"
        assert client.call(b"get k\r\n") == TKO_CONNECT_TIMEOUT
    assert state_of(server_line(proxy, address)) == "hard_tko down"


def test_a_connect_under_way_shows_as_connecting(
    unanswered_listener: int, proxy_factory: ProxyFactory
) -> None:
    address = f"127.0.0.1:{unanswered_listener}"
    proxy = proxy_factory(pool_config(address, connect_timeout=30_000))
    assert state_of(server_line(proxy, address)) == "new"
    with connect(proxy.port) as client:
        client.send(b"get k\r\n")  # its connect never completes while the test looks
        assert poll(lambda: state_of(server_line(proxy, address)) == "new connecting")
        line = server_line(proxy, address)
        # mcrouter's part of the line is unchanged: the proxy's own state follows the `; `.
        assert line.split("; ")[0].endswith(" new:1"), line
        assert field(line, "pending_reqs") == 1 and field(line, "inflight_reqs") == 0


def test_disable_tko_tracking_sends_every_request(
    recorder: Callable[[], Recorder], proxy_factory: ProxyFactory
) -> None:
    hung = recorder()
    proxy = proxy_factory(
        pool_config(hung.server.address),
        "-t",
        "100",
        "--timeouts-until-tko",
        "1",
        "--disable-tko-tracking",
    )
    with connect(proxy.port) as client:
        for key in (b"a", b"b", b"c"):
            assert client.call(b"get " + key + b"\r\n") == REPLY_TIMEOUT
    assert poll(lambda: hung.seen() == [b"get a", b"get b", b"get c"])
    assert state_of(server_line(proxy, hung.server.address)) == "closed"


# -- probes ----------------------------------------------------------------------------


def test_a_killed_server_comes_back_through_probes(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address), "-r", "50", "--probe-timeout-max", "100")
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert state_of(server_line(proxy, memcached.address)) == "up"
        memcached.process.kill()
        memcached.process.wait()
        # The connection it held ends; the reconnect is refused: hard TKO.
        assert poll(lambda: client.call(b"get nothing\r\n") == TKO_CONNECT_ERROR)
        assert state_of(server_line(proxy, memcached.address)).startswith("hard_tko ")
        probes_while_down = field(server_line(proxy, memcached.address), "probes")

        memcached.restart()
        # Probes keep going (connects refused meanwhile) until one gets `VERSION`.
        assert poll(lambda: client.call(b"set k 0 0 2\r\nv2\r\n") == b"STORED\r\n", 10)
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 0 2\r\nv2\r\nEND\r\n"
    line = server_line(proxy, memcached.address)
    assert state_of(line) == "up"
    assert field(line, "probes") >= max(probes_while_down, 1)
    log = proxy.log()
    assert "marked hard TKO: mc_res_connect_error" in log
    assert "recovered: probe" in log
    with connect(proxy.port) as client:
        assert client.call(b"stats suspect_servers\r\n", b"END\r\n") == b"END\r\n"


def test_a_probe_in_flight_shows_and_only_a_reply_clears_tko(
    recorder: Callable[[], Recorder], proxy_factory: ProxyFactory
) -> None:
    hung = recorder()
    proxy = proxy_factory(
        pool_config(hung.server.address),
        "-t",
        "1500",
        "--timeouts-until-tko",
        "1",
        "-r",
        "50",
        "--probe-timeout-max",
        "50",
    )
    with connect(proxy.port) as client:
        assert client.call(b"get a\r\n") == REPLY_TIMEOUT
        assert poll(lambda: b"version" in hung.seen())
        assert poll(
            lambda: state_of(server_line(proxy, hung.server.address)) == "soft_tko up probing"
        )
        # A probe that times out leaves the server TKO: requests still fail fast.
        assert client.call(b"get b\r\n") == TKO_TIMEOUT
        assert poll(lambda: hung.seen().count(b"version") >= 2, 8)
    assert b"get b" not in hung.seen()
    assert hung.seen()[0] == b"get a"
    assert set(hung.seen()[1:]) == {b"version"}


# -- calm reconnects -------------------------------------------------------------------


def test_a_server_that_closes_every_connection_is_redialled_with_backoff(
    proxy_factory: ProxyFactory,
) -> None:
    closer = FaultServer(lambda conn: None)  # accepts, then closes at once
    try:
        proxy = proxy_factory(pool_config(closer.address))
        requests = 300
        with connect(proxy.port) as client:
            for i in range(requests):
                assert client.call(b"get k%d\r\n" % i) == b"SERVER_ERROR remote error\r\n"
        accepted = closer.count("accept")
        # Far fewer connections than requests: after two failures in a row each
        # reconnect waits (0.1 s, doubling, at most 5 s) and requests fail at once.
        assert 1 <= accepted <= 30, accepted
        line = server_line(proxy, closer.address)
        assert field(line, "failed_fast") >= requests - accepted - 5
        assert "tko" not in line  # a closed connection is not a TKO reason
    finally:
        closer.close()


def test_without_tko_a_refused_server_is_redialled_with_backoff(
    proxy_factory: ProxyFactory,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(pool_config(nobody), "--disable-tko-tracking")
    requests = 300
    with connect(proxy.port) as client:
        for _ in range(requests):
            assert client.call(b"get k\r\n") == CONNECT_ERROR
    line = server_line(proxy, nobody)
    assert 2 <= field(line, "connect_failures") <= 30, line
    assert field(line, "connect_failures") + field(line, "failed_fast") == requests


# -- failover --------------------------------------------------------------------------


def failover_config(first: str, second: str) -> dict[str, object]:
    return {
        "pools": {"A": {"servers": [first]}, "B": {"servers": [second]}},
        "route": {"type": "FailoverRoute", "children": ["PoolRoute|A", "PoolRoute|B"]},
    }


def test_failover_skips_a_tko_child_without_sending_to_it(
    recorder: Callable[[], Recorder], memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    hung = recorder()
    proxy = proxy_factory(
        failover_config(hung.server.address, memcached.address),
        "-t",
        "200",
        "--timeouts-until-tko",
        "1",
        "-r",
        "600000",
    )
    with connect(proxy.port) as client:
        for i in range(20):
            assert client.call(b"set k%d 0 0 1\r\n%d\r\n" % (i, i % 10)) == b"STORED\r\n"
    # The first set timed out on A (and was stored on B); the other 19 never reached A.
    assert poll(lambda: len(hung.seen()) == 2)  # its line and its data block
    assert hung.seen()[0] == b"set k0 0 0 1"
    line = server_line(proxy, hung.server.address)
    assert field(line, "failed_fast") == 19
    assert field(line, "requests") == 1


def test_kill_9_under_load_behind_failover_costs_clients_no_error(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    main, backup = memcached_factory(), memcached_factory()
    proxy = proxy_factory(failover_config(main.address, backup.address), "-r", "600000")
    stop = threading.Event()
    errors: list[bytes] = []
    misses: list[bytes] = []
    done = [0] * 4
    problems: list[BaseException] = []

    def load(worker: int) -> None:
        try:
            with connect(proxy.port) as client:
                i = 0
                while not stop.is_set() or i < 50:
                    key = b"w%d-%d" % (worker, i)
                    reply = client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(key), key))
                    if reply != b"STORED\r\n":
                        errors.append(reply)
                    reply = client.call(b"get %s\r\n" % key, b"END\r\n")
                    if reply == b"END\r\n":
                        misses.append(key)
                    elif reply != b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(key), key):
                        errors.append(reply)
                    i += 1
                    done[worker] = i
        except BaseException as exc:
            problems.append(exc)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    assert poll(lambda: min(done) >= 50, 10)
    main.process.kill()  # SIGKILL: the proxy sees its connection reset or closed
    main.process.wait()
    started = list(done)
    assert poll(lambda: all(d >= s + 100 for d, s in zip(done, started, strict=True)), 20)
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not problems, problems
    # Every request in flight when memcached died failed over to the backup like
    # every one after it: the clients saw no error at all. A get may miss only when
    # its own set reached the dead server just before it died (one per client).
    assert errors == []
    assert len(misses) <= 4, misses
    assert state_of(server_line(proxy, main.address)) == "hard_tko down"
