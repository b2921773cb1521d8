"""`--metrics-port`: Prometheus metrics scraped over HTTP, summed over workers."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import Client, Memcached, Proxy, connect, free_port, poll, pool_config, stats_on
from prometheus_client.parser import text_string_to_metric_families

from mcrouter_trio.ops._metrics import FAMILIES, metrics_markdown

ProxyFactory = Callable[..., Proxy]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    """GET `path`; the metrics listener starts just after the proxy's, so wait for it."""
    assert poll(lambda: _accepts(port), 10), f"nothing listens on metrics port {port}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


def samples(port: int) -> Samples:
    """Every sample of a scrape by (name, sorted labels), as Prometheus parses them."""
    _, text = scrape(port)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def server_labels(server: Memcached) -> tuple[tuple[str, str], ...]:
    labels = {
        "server": f"127.0.0.1:{server.port}",
        "protocol": "ascii",
        "security": "plain",
        "timeout_ms": "1000",
    }
    return tuple(sorted(labels.items()))


def command(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("mcrouter_requests_total", (("command", name),))


def test_scrape_shows_requests_servers_and_connections_moving(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    metrics_port = free_port()
    proxy = proxy_factory(
        pool_config(f"127.0.0.1:{memcached.port}"),
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    content_type, _ = scrape(metrics_port)
    assert content_type.startswith("text/plain; version=")  # the text format
    before = samples(metrics_port)
    assert before[command("set")] == 0
    assert before[("mcrouter_num_proxies", ())] == 1
    with connect(proxy.port) as client:
        for i in range(3):
            assert client.call(b"set k%d 0 0 1\r\nv\r\n" % i) == b"STORED\r\n"
        assert client.call(b"get k0\r\n", b"END\r\n") == b"VALUE k0 0 1\r\nv\r\nEND\r\n"
        after = samples(metrics_port)
        assert after[("mcrouter_curr_connections", ())] == 1
    assert after[command("set")] == 3
    assert after[command("get")] == 1
    server = server_labels(memcached)
    assert after[("mcrouter_server_requests_total", server)] == 4
    assert after[("mcrouter_server_replies_total", server)] == 4
    assert after[("mcrouter_server_up", server)] == 1
    assert after[("mcrouter_server_tko", server)] == 0
    assert after[("mcrouter_total_connections_total", ())] >= 1
    info = [key for key in after if key[0] == "mcrouter_info"]
    assert len(info) == 1 and ("commandargs", "") not in info[0][1]


def test_a_server_that_refuses_connections_shows_tko(proxy_factory: ProxyFactory) -> None:
    metrics_port, dead_port = free_port(), free_port()
    proxy = proxy_factory(
        pool_config(f"127.0.0.1:{dead_port}"), "--metrics-port", str(metrics_port),
        "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n").startswith(b"SERVER_ERROR")
    labels = (
        ("protocol", "ascii"),
        ("security", "plain"),
        ("server", f"127.0.0.1:{dead_port}"),
        ("timeout_ms", "1000"),
    )
    assert poll(lambda: samples(metrics_port)[("mcrouter_server_tko", labels)] == 1)
    after = samples(metrics_port)
    assert after[("mcrouter_server_up", labels)] == 0
    assert after[("mcrouter_server_errors_total", labels)] >= 1


def test_metrics_are_summed_over_workers(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    metrics_port = free_port()
    proxy = proxy_factory(
        pool_config(f"127.0.0.1:{memcached.port}"), "--num-proxies", "2",
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    assert poll(lambda: _answers(metrics_port), seconds=10)
    pids = set()
    sets = 24
    for i in range(sets):
        with closing(Client(proxy.port)) as client:
            assert client.call(b"set k%d 0 0 1\r\nv\r\n" % i) == b"STORED\r\n"
            pids.add(stats_on(client)["pid"])
    assert len(pids) == 2  # both workers took sets: the sum needs the other's snapshot
    server = server_labels(memcached)
    latency_count = ("mcrouter_server_latency_seconds_count", server)

    def both_workers_counted() -> bool:
        scraped = samples(metrics_port)
        return scraped[command("set")] == sets and scraped[latency_count] == sets

    assert poll(both_workers_counted)
    after = samples(metrics_port)
    assert after[("mcrouter_server_requests_total", server)] == sets
    # Each reply timed once, by the worker that read it; the histograms add up.
    assert after[("mcrouter_server_latency_seconds_bucket", (("le", "+Inf"), *server))] == sets
    assert after[("mcrouter_all_servers_latency_seconds_count", ())] == sets
    assert after[("mcrouter_num_proxies", ())] == 2
    assert str(int(after[("mcrouter_pid", ())])) in pids


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_other_paths_and_methods(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    metrics_port = free_port()
    proxy_factory(
        pool_config(f"127.0.0.1:{memcached.port}"), "--metrics-port", str(metrics_port),
        "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(metrics_port, "/nope")
    assert missing.value.code == 404
    request = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics", method="POST")
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(request, timeout=5)
    assert post.value.code == 405
    head = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as response:
        assert int(response.headers["Content-Length"]) > 0
        assert response.read() == b""
    with connect(metrics_port) as raw:  # not HTTP at all: 400, and the server lives on
        assert raw.call(b"stats\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _answers(metrics_port)


def test_every_documented_metric_is_scraped(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    metrics_port = free_port()
    proxy_factory(
        pool_config(f"127.0.0.1:{memcached.port}"), "--metrics-port", str(metrics_port),
        "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    names = {name for name, _ in samples(metrics_port)}
    assert names == {name for family in FAMILIES for name in family.sample_names}


def test_docs_list_the_metrics_as_the_table_makes_them() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert metrics_markdown() in docs
