"""mcrouter's stats by its names (`stat_list.h`): its tests' reads of them, replayed.

`TestErrorStatsRequests` of mcrouter's test_stats.py is replayed with a fault server
for its `CustomErrorServer`; the other tests make each `result_*` family, the
`failover_*` counts and the `request_*` counts move the way mcrouter's sources count
them (`ProxyRequestLogger-inl.h`, `FailoverRoute.h`, `ProxyRequestContextTyped-inl.h`),
and check that `stats all` lists every name the proxy keeps, summed over workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest
import test_mcrouter_pytests
import test_tls_e2e
from _pki import Pki
from conftest import (
    Client,
    Conn,
    FaultServer,
    Memcached,
    connect,
    free_port,
    poll,
    pool_config,
)
from test_mcrouter_pytests import McClient, ProxyFactory
from test_metrics import scrape

from mcrouter_trio.counters import PROXY_STATS

#: The sibling modules' fixtures, made this module's too (pytest finds them by name).
start_mcrouter = test_mcrouter_pytests.start_mcrouter
pki = test_tls_e2e.pki
relay_factory = test_tls_e2e.relay_factory

FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]

SET = b"set test_key 0 0 3\r\nabc\r\n"

#: mcrouter's names the proxy keeps (docs/operations.md, "mcrouter's stats"), as a
#: monitoring tool written for mcrouter would look them up.
MCROUTER_NAMES = [
    *[
        "num_client_connections",
        "num_servers",
        "num_servers_new",
        "num_servers_up",
        "num_servers_down",
        "num_servers_closed",
        "num_ssl_servers",
        "num_ssl_servers_new",
        "num_ssl_servers_up",
        "num_ssl_servers_down",
        "num_ssl_servers_closed",
        "num_suspect_servers",
        "num_connections_opened",
        "num_connections_closed",
        "num_ssl_connections_opened",
        "num_ssl_connections_closed",
        "num_ssl_resumption_attempts",
        "num_ssl_resumption_successes",
        "num_soft_tko_count",
        "num_hard_tko_count",
        "num_fail_open_state_entered",
        "num_fail_open_state_exited",
        "asynclog_requests_rate",
        "asynclog_spool_success_rate",
        "ps_rss",
        "rusage_system",
        "rusage_user",
        "ps_num_minor_faults",
        "ps_num_major_faults",
        "ps_user_time_sec",
        "ps_system_time_sec",
        "ps_vsize",
        "num_proxies",
        "proxy_reqs_processing",
        "proxy_request_num_outstanding",
        "request_sent_count",
        "request_error_count",
        "request_success_count",
        "request_replied_count",
        "request_sent",
        "request_error",
        "request_success",
        "request_replied",
        "dev_null_requests",
        "failover_all",
        "failover_all_failed",
        "failover_rate_limited",
        "failover_inorder_policy",
        "failover_inorder_policy_failed",
        "failover_least_failures_policy",
        "failover_least_failures_policy_failed",
        "failover_deterministic_order_policy",
        "failover_deterministic_order_policy_failed",
        "before_latency_injected",
        "after_latency_injected",
        "total_latency_injected",
        "failover_num_collisions",
        "failover_num_failed_domain_collisions",
        "failover_policy_result_error",
        "failover_all_failed_count",
        "failover_policy_tko_error",
        "final_result_error",
        "destination_batches_sum",
        "destination_requests_sum",
        "max_num_tko",
        "destination_pending_reqs",
        "destination_inflight_reqs",
        "destination_batch_size",
        "duration_us",
        "destination_max_pending_reqs",
        "destination_max_inflight_reqs",
        "config_age",
        "config_last_attempt",
        "config_last_success",
        "config_failures",
    ],
    *(
        f"result_{family}{every}{count}"
        for family in [
            "error",
            "connect_error",
            "connect_timeout",
            "data_timeout",
            "busy",
            "tko",
            "client_error",
            "local_error",
            "remote_error",
        ]
        for every in ("", "_all")
        for count in ("", "_count")
    ),
]


def answer_every_set_with(line: bytes) -> Callable[[Conn], None]:
    """mcrouter's CustomErrorServer: reads a set (line and data) and answers `line`."""

    def handler(conn: Conn) -> None:
        while (head := conn.readline()) is not None:
            if head.startswith(b"set ") and conn.readline() is None:
                return
            conn.send(line + b"\r\n")

    return handler


def never_answer(conn: Conn) -> None:
    conn.wait_closed()


def numbers(mcr: McClient, group: str = "all") -> dict[str, float]:
    return {name: float(value) for name, value in mcr.stats(group).items() if _numeric(value)}


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# -- test_stats.py TestErrorStatsRequests -------------------------------------------


@pytest.mark.parametrize(
    ("error", "family"),
    [(b"CLIENT_ERROR", "client_error"), (b"SERVER_ERROR remote error", "remote_error")],
)
def test_error_stats_requests(
    fault_server: FaultServerFactory,
    start_mcrouter: Callable[..., McClient],
    error: bytes,
    family: str,
) -> None:
    """test_stats.py TestErrorStatsRequests.test_client_error / test_remote_error."""
    server = fault_server(answer_every_set_with(error))
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [server.port])
    assert mcr.client.call(SET) == error + b"\r\n"
    stats = mcr.stats("all")
    assert int(stats[f"result_{family}_count"]) == 1
    assert int(stats["result_error_count"]) == 1
    # Beyond mcrouter's test: the `_all` twins, the other families, the client's side.
    assert int(stats[f"result_{family}_all_count"]) == 1
    assert int(stats["result_error_all_count"]) == 1
    other = "remote_error" if family == "client_error" else "client_error"
    assert int(stats[f"result_{other}_count"]) == 0
    assert int(stats["request_error_count"]) == 1
    # Per second over the window: one error since the proxy started, a moment ago.
    assert float(stats[f"result_{family}"]) > 0
    assert float(stats["final_result_error"]) > 0
    assert mcr.stats("count")[f"result_{family}_count"] == "1"
    assert f"result_{family}_count" not in mcr.stats()  # not in the basic group


def test_stats_all_lists_every_name_the_proxy_keeps(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    names = mcr.stats("all")
    missing = [name for name in MCROUTER_NAMES if name not in names]
    assert not missing
    assert [name for name in names if not name.endswith("_count") or name in _TABLE] == list(_TABLE)


_TABLE = {stat.name: stat for stat in PROXY_STATS}


# -- each result family moves as mcrouter counts it ---------------------------------


def test_a_connect_error_then_tko(
    proxy_factory: ProxyFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """A refused connect: `result_connect_error`; the server is then hard TKO and the next
    request is refused unsent: `result_tko`. Both are errors to the client."""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [free_port()], "-r", "600000")
    assert mcr.get("key") == "SERVER_ERROR connection error"
    assert mcr.get("key") == "SERVER_ERROR Server unavailable. Reason: mc_res_connect_error"
    stats = numbers(mcr)
    assert stats["result_connect_error_count"] == stats["result_connect_error_all_count"] == 1
    assert stats["result_tko_count"] == stats["result_tko_all_count"] == 1
    assert stats["result_error_count"] == 2
    assert stats["num_hard_tko_count"] == 1 and stats["num_soft_tko_count"] == 0
    assert stats["max_num_tko"] == 1
    assert stats["request_error_count"] == 2
    assert stats["num_connections_opened"] == 0


def test_a_connect_timeout(unanswered_listener: int, proxy_factory: ProxyFactory) -> None:
    address = f"127.0.0.1:{unanswered_listener}"
    proxy = proxy_factory(pool_config(address, connect_timeout=200), "-r", "600000")
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n") == b"SERVER_ERROR connection timeout\r\n"
        stats = stats_all(client)
    assert stats["result_connect_timeout_count"] == "1"
    assert stats["result_connect_timeout_all_count"] == "1"
    assert stats["result_error_count"] == "1"
    assert stats["result_connect_error_count"] == "0"


def test_a_reply_timeout_is_a_data_timeout(
    fault_server: FaultServerFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    sleeper = fault_server(never_answer)
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [sleeper.port], "--server-timeout", "200")
    assert mcr.get("key") == "SERVER_ERROR Reply timeout"
    stats = numbers(mcr)
    assert stats["result_data_timeout_count"] == stats["result_error_count"] == 1
    assert stats["num_connections_opened"] == 1
    assert poll(lambda: numbers(mcr)["num_connections_closed"] == 1)


def test_successes_count_as_replies_not_errors(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.set("key", "value") is True
    assert mcr.get("key") == "value"
    assert mcr.get("missing") is None
    stats = numbers(mcr)
    # The `stats all` asking is a request too, sent and not answered while it is read.
    assert stats["request_sent_count"] == 4  # the `stats all` asking is one too
    assert stats["request_replied_count"] == 4  # it is answered while being worked out
    assert stats["request_success_count"] == 4
    assert stats["request_error_count"] == stats["result_error_count"] == 0
    assert stats["proxy_request_num_outstanding"] == 0
    assert stats["num_connections_opened"] == 1
    assert stats["destination_requests_sum"] > 0  # per second over the window
    assert stats["destination_batch_size"] == 1
    assert stats["duration_us"] > 0  # the mean server latency of the window


def test_tls_connections_and_resumption(
    proxy_factory: ProxyFactory,
    memcached_factory: Callable[..., Memcached],
    pki: Pki,
    relay_factory: Callable[[int], test_tls_e2e.RecordingRelay],
) -> None:
    """`num_ssl_connections_*` and `num_ssl_resumption_*`, as ProxyDestination.cpp counts
    them: a handshake that offered a session is an attempt, one that resumed it a
    success. A broken connection is closed and the next one resumes the session."""
    server = memcached_factory(*test_tls_e2e.memcached_tls_args(pki, "ssl_session_cache"))
    relay = relay_factory(server.port)
    proxy = proxy_factory(test_tls_e2e.ssl_pool(relay.address), *pki.client_flags())
    with closing(Client(proxy.port)) as client:
        assert client.call(SET) == b"STORED\r\n"
        stats = stats_all(client)
    assert stats["num_ssl_servers"] == stats["num_ssl_servers_up"] == "1"
    assert stats["num_ssl_connections_opened"] == stats["num_connections_opened"] == "1"
    assert stats["num_ssl_resumption_attempts"] == "0"
    relay.drop_connections()
    assert poll(lambda: test_tls_e2e.reconnected(proxy.port, b"k"), 10)
    with closing(Client(proxy.port)) as client:
        stats = stats_all(client)
    assert stats["num_ssl_connections_opened"] == "2"
    assert stats["num_ssl_connections_closed"] == stats["num_connections_closed"] == "1"
    assert stats["num_ssl_resumption_attempts"] == stats["num_ssl_resumption_successes"] == "1"


# -- failover ------------------------------------------------------------------------


def failover_config(*servers: str) -> dict[str, Any]:
    return {
        "pools": {f"p{index}": {"servers": [server]} for index, server in enumerate(servers)},
        "route": {
            "type": "FailoverRoute",
            "children": [f"PoolRoute|p{index}" for index in range(len(servers))],
        },
    }


def test_failover_stats_under_a_failing_first_child(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(failover_config(dead, memcached.address), "-r", "600000")
    with connect(proxy.port) as client:
        assert client.call(SET) == b"STORED\r\n"  # connect error, then the second child
        assert client.call(SET) == b"STORED\r\n"  # TKO, then the second child
        stats = stats_all(client)
    assert stats["failover_policy_tko_error"] == "2"
    assert stats["failover_policy_result_error"] == "0"
    assert stats["failover_all_failed_count"] == "0"
    assert float(stats["failover_all"]) > 0 and float(stats["failover_inorder_policy"]) > 0
    assert float(stats["failover_inorder_policy_failed"]) == 0
    # The first child's results are the request's own (not failovers).
    assert stats["result_connect_error_count"] == "1"
    assert stats["result_tko_count"] == "1"
    assert stats["request_error_count"] == "0"


def test_failover_all_failed(proxy_factory: ProxyFactory) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    proxy = proxy_factory(failover_config(*dead), "-r", "600000")
    with connect(proxy.port) as client:
        assert client.call(SET) == b"SERVER_ERROR connection error\r\n"
        stats = stats_all(client)
    assert stats["failover_all_failed_count"] == "1"
    assert float(stats["failover_all_failed"]) > 0
    assert float(stats["failover_inorder_policy_failed"]) > 0
    assert stats["failover_policy_tko_error"] == "1"
    # Both children were refused; the second one's is a failover's: `_all` only.
    assert stats["result_connect_error_all_count"] == "2"
    assert stats["result_connect_error_count"] == "1"
    assert stats["request_error_count"] == "1"


# -- workers and metrics -------------------------------------------------------------


def test_result_stats_are_summed_over_workers(
    fault_server: FaultServerFactory, proxy_factory: ProxyFactory
) -> None:
    server = fault_server(answer_every_set_with(b"CLIENT_ERROR"))
    proxy = proxy_factory(pool_config(server.address), "--num-proxies", "2")
    pids: set[int] = set()
    sent = 0
    deadline = time.monotonic() + 10
    while len(pids) < 2 and time.monotonic() < deadline:
        with closing(Client(proxy.port)) as client:
            assert client.call(SET) == b"CLIENT_ERROR\r\n"
            sent += 1
            pids.add(int(stats_all(client)["pid"]))
    assert len(pids) == 2
    # Workers publish twice a second: every one answers with the sum, soon.
    assert poll(lambda: agreed(proxy.port, "result_client_error_count", sent), 5)


def agreed(port: int, name: str, value: int) -> bool:
    with closing(Client(port)) as client:
        return stats_all(client)[name] == str(value)


def test_metrics_export_the_counts(
    fault_server: FaultServerFactory, proxy_factory: ProxyFactory
) -> None:
    server = fault_server(answer_every_set_with(b"SERVER_ERROR out of memory"))
    metrics_port = free_port()
    proxy = proxy_factory(pool_config(server.address), "--metrics-port", str(metrics_port))
    with connect(proxy.port) as client:
        assert client.call(SET) == b"SERVER_ERROR out of memory\r\n"
    _content_type, page = scrape(metrics_port)
    assert "mcrouter_result_remote_error_count_total 1.0" in page
    assert "mcrouter_request_error_count_total 1.0" in page
    assert "mcrouter_result_remote_error " not in page  # the per-second twin is not a metric


def stats_all(client: Client) -> dict[str, str]:
    raw = client.call(b"stats all\r\n", b"END\r\n").decode()
    return {
        line.split(" ", 2)[1]: line.split(" ", 2)[2]
        for line in raw.split("\r\n")
        if line.startswith("STAT ")
    }
