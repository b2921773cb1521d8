"""Reply latency: each destination's histogram, `stats servers`' mean, the metrics' buckets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from conftest import Conn, FaultServer, Memcached, Proxy, connect, free_port, poll
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_counters import stats_lines
from test_metrics import Samples, samples, server_labels

from mcrouter_trio.counters import LATENCY_BOUNDS, Latencies, latency_bucket
from mcrouter_trio.ops import ProxyStats, SharedStats, StatsBoard
from mcrouter_trio.ops._metrics import registry_for
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.upstream import Destination

ProxyFactory = Callable[..., Proxy]
FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]
LAST = len(LATENCY_BOUNDS)  # the bucket for anything slower than the last bound

# -- the buckets, in memory ---------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (-0.001, 0),  # a clock step backwards still counts, in the fastest bucket
        (0.0, 0),
        (0.00005, 0),
        (0.0001, 0),  # a bound belongs to its own bucket (Prometheus' `le`)
        (0.00010001, 1),
        (0.0002, 1),
        (0.0003, 2),
        (0.001, 3),
        (0.0015, 4),
        (0.25, 11),
        (1.0, 12),
        (9.99, LAST - 1),
        (10.0, LAST - 1),
        (10.5, LAST),
        (1e9, LAST),
        (float("inf"), LAST),
    ],
)
def test_an_observation_lands_in_the_first_bucket_whose_bound_holds_it(
    seconds: float, bucket: int
) -> None:
    assert latency_bucket(seconds) == bucket
    if bucket < LAST:
        assert seconds <= LATENCY_BOUNDS[bucket]
    if bucket > 0:
        assert seconds > LATENCY_BOUNDS[bucket - 1]


def test_the_bounds_run_from_100_microseconds_to_10_seconds_in_1_2_5_steps() -> None:
    assert LATENCY_BOUNDS[0] == 0.0001 and LATENCY_BOUNDS[-1] == 10.0
    assert list(LATENCY_BOUNDS) == sorted(set(LATENCY_BOUNDS))
    for smaller, larger in itertools.pairwise(LATENCY_BOUNDS):
        assert round(larger / smaller, 6) in (2.0, 2.5)


def test_histograms_add_up_and_travel_as_lists() -> None:
    one = Latencies()
    one.counts[0] += 2
    one.counts[LAST] += 1
    one.sum = 12.5
    other = Latencies.from_list(one.to_list())
    assert (other.counts, other.sum) == (one.counts, one.sum)
    other.add(one)
    assert other.counts[0] == 4 and other.counts[LAST] == 2 and other.count == 6
    assert other.sum == 25.0 and other.mean == 25.0 / 6
    assert Latencies().mean == 0.0
    # A snapshot from a version with other buckets counts nothing rather than lying.
    assert Latencies.from_list([1.0, 2.0, 3.0]).count == 0


PLAIN = ServerSpec("127.0.0.1", 11311)


def observe(latencies: Latencies, *seconds: float) -> None:
    """What the destination's read loop does for each reply."""
    for value in seconds:
        latencies.counts[latency_bucket(value)] += 1
        latencies.sum += value


def test_stats_servers_and_metrics_sum_the_workers_histograms() -> None:
    board = StatsBoard.for_servers(workers=2, servers=1)
    mine, theirs = ProxyStats(), ProxyStats()
    mine.shared, theirs.shared = SharedStats(board, 0), SharedStats(board, 1)
    my_dests, their_dests = {PLAIN: Destination(PLAIN)}, {PLAIN: Destination(PLAIN)}
    observe(my_dests[PLAIN].latencies, 0.0001, 0.003)
    observe(their_dests[PLAIN].latencies, 0.003, 0.3, 20.0)
    theirs.publish(their_dests)
    (line,) = [v for _, v in stats_lines(mine.reply([b"servers"], my_dests).raw)]
    mean_us = (0.0001 + 0.003 + 0.003 + 0.3 + 20.0) / 5 * 1e6
    # Each worker's connection is counted in its state, as mcrouter counts its proxies'.
    assert line.startswith(f"avg_latency_us:{mean_us:.3f} pending_reqs:0 inflight_reqs:0 new:2; ")
    text = generate_latest(registry_for(mine, my_dests)).decode()
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = (
        ("protocol", "ascii"),
        ("security", "plain"),
        ("server", PLAIN.address),
        ("timeout_ms", str(PLAIN.timeout_ms)),
    )
    server = histogram(scraped, "mcrouter_server_latency_seconds", labels)
    cumulative = {"0.0001": 1, "0.002": 1, "0.005": 3, "0.2": 3, "0.5": 4, "10.0": 4, "+Inf": 5}
    for le, count in cumulative.items():
        assert server[le] == count, (le, server)
    assert len(server) == LAST + 1 + 2  # every bucket, the sum and the count
    assert server["count"] == 5 and server["sum"] == pytest.approx(20.3061)
    every = histogram(scraped, "mcrouter_all_servers_latency_seconds")
    assert every == server  # one server: all servers' histogram is its own


# -- through a proxy, to real memcached and a slow server ----------------------------

DELAY = 0.12  # the slow server's pause before each reply
REQUESTS = 4


def slow_misses(conn: Conn) -> None:
    """Answer every get with a miss, `DELAY` seconds after reading it."""
    while (line := conn.readline()) is not None:
        assert line.startswith(b"get ")
        time.sleep(DELAY)
        if not conn.send(b"END\r\n"):
            return


def histogram(
    scraped: Samples, name: str, labels: tuple[tuple[str, str], ...] = ()
) -> dict[str, float]:
    """The cumulative count per `le` of one histogram, plus its `sum` and `count`."""
    found = {"sum": scraped[(f"{name}_sum", labels)], "count": scraped[(f"{name}_count", labels)]}
    for (sample, sample_labels), value in scraped.items():
        if sample == f"{name}_bucket":
            rest = tuple(pair for pair in sample_labels if pair[0] != "le")
            if rest == labels:
                found[dict(sample_labels)["le"]] = value
    return found


def metrics_served(port: int) -> bool:
    try:
        samples(port)
    except OSError:
        return False
    return True


def test_each_servers_replies_are_timed_and_a_slow_server_lands_in_slow_buckets(
    memcached: Memcached, fault_server: FaultServerFactory, proxy_factory: ProxyFactory
) -> None:
    slow = fault_server(slow_misses)
    config = {
        "pools": {"A": {"servers": [memcached.address]}, "B": {"servers": [slow.address]}},
        "route": {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]},
    }
    metrics_port = free_port()
    proxy = proxy_factory(
        config, "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"
    )
    assert poll(lambda: metrics_served(metrics_port))  # it listens a moment after the proxy
    before = samples(metrics_port)
    fast_labels = server_labels(memcached)
    assert histogram(before, "mcrouter_server_latency_seconds", fast_labels)["count"] == 0
    with connect(proxy.port) as client:
        client.send(b"".join(b"get k%d\r\n" % i for i in range(REQUESTS)))  # pipelined
        for _ in range(REQUESTS):
            assert client.read_until(b"END\r\n") == b"END\r\n"
        servers = dict(stats_lines(client.call(b"stats servers\r\n", b"END\r\n")))
    slow_line = next(line for key, line in servers.items() if key.startswith(slow.address))
    assert slow_line.startswith("avg_latency_us:")
    after = samples(metrics_port)
    fast = histogram(after, "mcrouter_server_latency_seconds", fast_labels)
    slow_labels = tuple((k, slow.address if k == "server" else v) for k, v in fast_labels)
    slowed = histogram(after, "mcrouter_server_latency_seconds", slow_labels)
    every = histogram(after, "mcrouter_all_servers_latency_seconds")
    assert fast["count"] == fast["+Inf"] == REQUESTS
    assert slowed["count"] == slowed["+Inf"] == REQUESTS
    assert every["count"] == 2 * REQUESTS
    assert every["sum"] == pytest.approx(fast["sum"] + slowed["sum"])
    # Nothing of the slow server's is faster than its pause: every observation is in a
    # bucket whose bound is at or above it, and the sum is at least the pauses.
    below = max(bound for bound in LATENCY_BOUNDS if bound < DELAY)
    assert slowed[repr(below)] == 0
    assert slowed["sum"] >= REQUESTS * DELAY
    # `stats servers` and the histogram agree on the mean.
    mean_us = float(slow_line.split()[0].removeprefix("avg_latency_us:"))
    assert mean_us == pytest.approx(slowed["sum"] / slowed["count"] * 1e6, abs=0.001)
