"""mcrouter's python tests of stats, flags and startup, replayed against this proxy.

As in `test_mcrouter_pytests.py` (whose helpers these use): mcrouter's configs with
their ports made the test servers', mcrouter's flags, requests and assertions. Where
mcrouter's test uses a mock server, a fault server (`fault_server`) plays it: one that
reads requests and never answers stands for `SleepServer`. Timing is replaced by
waiting for the state the test's sleep waits for.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import test_mcrouter_pytests
from conftest import Conn, FaultServer, Memcached, connect, poll
from test_mcrouter_pytests import (
    CONFIGS,
    McClient,
    ProxyFactory,
    get_on,
    harness_listen_socket,
    mc,
    mcrouter_config,
)

#: The sibling module's fixture, made this module's too (pytest finds it by name).
start_mcrouter = test_mcrouter_pytests.start_mcrouter

FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]


def never_answer(conn: Conn) -> None:
    """mcrouter's SleepServer: reads whatever comes and never replies."""
    conn.wait_closed()


# -- test_stats.py -----------------------------------------------------------------


def test_stats_server_stats_pending_and_inflight(
    fault_server: FaultServerFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_stats.py TestServerStatsRequests.test_server_stats: a set that the server
    never answers is outstanding: `pending_reqs` and `inflight_reqs` are the second and
    third fields of the server's one `stats servers` line, and add up to 1."""
    sleeper = fault_server(never_answer)
    mcr = start_mcrouter("test_server_stats_pending", [sleeper.port], "--server-timeout", "5000")
    mcr.set("test:foo", "bar")  # AllAsyncRoute: answered at once, sent in the background

    def outstanding() -> int:
        (value,) = mcr.stats("servers").values()
        parts = value.split(" ")
        return int(parts[1].split(":")[1]) + int(parts[2].split(":")[1])

    assert poll(lambda: outstanding() == 1)
    stats = mcr.stats("servers")
    assert len(stats) == 1
    (value,) = stats.values()
    value_parts = value.split(" ")
    pending_reqs = value_parts[1].split(":")
    inflight_reqs = value_parts[2].split(":")
    assert value_parts[0] == "avg_latency_us:0.000"
    assert pending_reqs[0] == "pending_reqs"
    assert inflight_reqs[0] == "inflight_reqs"
    assert int(pending_reqs[1]) + int(inflight_reqs[1]) == 1
    # Written and unanswered: in flight, not pending.
    assert poll(lambda: mcr.stats("servers")[f"127.0.0.1:{sleeper.port}:ascii:plain:notcompressed-5000"].startswith(  # noqa: E501
        "avg_latency_us:0.000 pending_reqs:0 inflight_reqs:1 up:1; "
    ))  # fmt: skip


def test_stats_servers_line_is_mcrouters_up_to_the_first_semicolon(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    """mcrouter's `stats.cpp` ServerStat::toString: the key `host:port:ascii:plain:
    notcompressed-<timeout ms>`, then `avg_latency_us:%.3f pending_reqs:N
    inflight_reqs:N` and `state:count`; the proxy's own fields follow `; `."""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    key = f"127.0.0.1:{memcached.port}:ascii:plain:notcompressed-1000"
    assert mcr.stats("servers") == {
        key: "avg_latency_us:0.000 pending_reqs:0 inflight_reqs:0 new:1; requests:0 replies:0"
        " errors:0 connects:0 connect_failures:0 failed_fast:0 probes:0 batches:0"
        " get_batches:0 ejections:0 ejected:0"
    }
    assert mcr.set("key", "value") is True
    line = mcr.stats("servers")[key]
    assert re.fullmatch(
        r"avg_latency_us:\d+\.\d{3} pending_reqs:0 inflight_reqs:0 up:1; requests:1 replies:1 .*",
        line,
    ), line


def test_stats_servers_shows_tko_as_mcrouter(
    fault_server: FaultServerFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """mcrouter's ` soft_tko; ` after the counts of outstanding requests, then the
    connection's state: a server that timed out once (`--timeouts-until-tko 1`)."""
    sleeper = fault_server(never_answer)
    mcr = start_mcrouter(
        "test_probe_timeout", [sleeper.port], "--server-timeout", "200",
        "--timeouts-until-tko", "1", "--probe-timeout-initial", "60000",
    )  # fmt: skip
    reply = mcr.get("key")
    assert isinstance(reply, str) and reply.startswith("SERVER_ERROR"), reply
    (line,) = mcr.stats("servers").values()
    head = line.split("; ", 2)
    assert head[0].startswith("avg_latency_us:0.000 pending_reqs:0 inflight_reqs:0 soft_tko")
    assert head[1].lstrip(" ") in ("up:1", "closed:1"), line
    assert "  " in line  # mcrouter's ` soft_tko; ` then ` up:1`: two spaces


# -- test_allow_only_gets.py ----------------------------------------------------------


def test_allow_only_gets(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_allow_only_gets.py TestAllowGetsOnly.test_allow_gets_only: with
    `--allow-only-gets`, updates get their default reply and reach no server; get, gat,
    gats (and mg, standing in for mcrouter's `metaget`) are routed as usual."""
    with mc(memcached) as server:
        assert server.set("key", "1", exptime=100)
        assert server.get("key") == "1"
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached], "--allow-only-gets")

    assert not mcr.set("key", "2")
    assert not mcr.delete("key")
    assert not mcr.arith("incr", "key", 1)
    assert not mcr.arith("decr", "key", 1)
    assert not mcr.add("key", "2")
    assert not mcr.add("key2", "1")
    # mcrouter's default replies, byte for byte, and nothing reached the server.
    assert mcr.client.call(b"set key 0 0 1\r\n2\r\n") == b"NOT_STORED\r\n"
    assert mcr.client.call(b"touch key 10\r\n") == b"NOT_FOUND\r\n"
    assert mcr.client.call(b"ms key 1 T0\r\n2\r\n") == b"NS\r\n"
    assert mcr.client.call(b"md key\r\n") == b"NF\r\n"
    assert get_on(memcached, "key") == "1"
    assert get_on(memcached, "key2") is None

    assert mcr.get("key") == "1"
    ttl = mcr.client.call(b"mg key t v\r\n", b"\r\n1\r\n").decode()
    assert re.fullmatch(r"VA 1 t(\d+)\r\n1\r\n", ttl), ttl
    assert 0 < int(ttl.split("t")[1].split("\r")[0]) <= 100
    assert mcr.get("key2") is None
    assert mcr.gat(0, "key") == "1"
    assert mcr.gat(0, "key2") is None
    assert mcr.gats(0, "key") is not None
    assert mcr.gat(0, "key2") is None


def test_without_allow_only_gets_updates_are_routed(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    """The same updates without the flag reach the server (the flag made the difference)."""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.set("key", "2") is True
    assert mcr.arith("incr", "key", 1) == 3
    assert get_on(memcached, "key") == "3"


# -- test_mcrouter_basic.py: --enable-logging-route ------------------------------------


@pytest.mark.parametrize(("args", "count"), [(("--enable-logging-route",), 1), ((), 0)])
def test_basic_enable_logging_route(
    args: tuple[str, ...],
    count: int,
    memcached: Memcached,
    start_mcrouter: Callable[..., McClient],
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_enable_logging_route,
    test_no_logging_route: the flag puts a LoggingRoute (mcrouter's `logging`) in
    front of the route; requests still reach the server."""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached], *args)
    reply = mcr.get("__mcrouter__.route_handles(get,test)")
    assert isinstance(reply, str)
    assert reply.count("logging") == count, reply
    assert mcr.set("key", "value") is True
    assert mcr.get("key") == "value"
    assert get_on(memcached, "key") == "value"


# -- test_max_shadow_requests.py ------------------------------------------------------


def test_max_shadow_requests(
    memcached: Memcached,
    fault_server: FaultServerFactory,
    start_mcrouter: Callable[..., McClient],
) -> None:
    """test_max_shadow_requests.py TestServerStatsOutstandingRequests: with
    `--target-max-shadow-requests 2`, of 10 gets shadowed to a server slow to answer,
    only 2 reach it; the others' copies are dropped. mcrouter's TimeoutServer sleeps
    0.5 s per request; this one holds its replies until the gets are done."""
    release = threading.Event()
    seen: list[bytes] = []

    def slow_shadow(conn: Conn) -> None:
        """Reads every request as it comes; answers them (misses) once released."""
        owed = 0
        while not conn.server.has("eof", conn.index):
            line = conn.readline(timeout=0.05)
            if line is not None:
                seen.append(line)
                owed += 1
            if owed and release.is_set():
                conn.send(b"END\r\n" * owed)
                owed = 0

    shadow = fault_server(slow_shadow)
    mcr = start_mcrouter(
        "test_max_shadow_requests", [memcached, shadow.port],
        "-t", "1000000", "--target-max-shadow-requests", "2",
    )  # fmt: skip
    for _ in range(10):
        assert mcr.get("test") is None
    assert poll(lambda: len(seen) == 2)
    assert mcr.stats()["background_requests_dropped"] == "8"
    release.set()
    assert poll(lambda: mcr.stats()["background_requests_in_flight"] == "0")
    assert seen == [b"get test", b"get test"]
    # In flight is what is capped: answered, the shadow gets copies again.
    assert mcr.get("test") is None
    assert poll(lambda: len(seen) == 3)


def test_max_shadow_requests_zero_is_no_limit(
    memcached_factory: Callable[..., Memcached], start_mcrouter: Callable[..., McClient]
) -> None:
    """mcrouter's `target_max_shadow_requests > 0 &&`: 0 caps nothing."""
    main, shadow = memcached_factory(), memcached_factory()
    mcr = start_mcrouter(
        "test_max_shadow_requests", [main, shadow], "--target-max-shadow-requests", "0"
    )
    assert mcr.set("key", "value") is True
    assert poll(lambda: get_on(shadow, "key") == "value")
    assert mcr.stats()["background_requests_dropped"] == "0"


# -- test_bad_params.py, test_validate_config.py -------------------------------------


def test_bad_params_bad_config(tmp_path: Path) -> None:
    """test_bad_params.py TestBadParams.test_bad_config: a config that cannot be read
    is reported in mcrouter's words (`Can not read config`), with the reason, and the
    proxy does not start (never `reconfigured with`)."""
    listen_sock = harness_listen_socket()
    fd = listen_sock.fileno()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mcrouter_trio", "-f", "/dev/null/doesnotexist",
             "--listen-sock-fd", str(fd)],
            pass_fds=[fd], capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    finally:
        listen_sock.close()
    assert result.returncode != 0
    assert re.search("Can not read config", result.stderr), result.stderr
    assert not re.search("reconfigured with", result.stderr)
    assert "/dev/null/doesnotexist" in result.stderr


def test_bad_config_names_mcrouters_words_and_the_json_path(tmp_path: Path) -> None:
    """An invalid config: mcrouter's words, then each problem with its JSON path."""
    config = tmp_path / "config.json"
    config.write_text('{"pools": {}, "route": {"type": "PoolRute", "pool": "A"}}')
    result = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "-p", "1", "-f", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert f"Can not read config from {config}: " in result.stderr
    assert "@ $.route" in result.stderr


def validate(tmp_path: Path, config: Path) -> int:
    """test_validate_config.py try_mcrouter: mcrouter's command line, its exit status."""
    listen_sock = harness_listen_socket()
    fd = listen_sock.fileno()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "mcrouter_trio", "-L", str(tmp_path / "test.log"),
             "--config", f"file:{config}", "--listen-sock-fd", str(fd),
             "--stats-logging-interval", "0", "--config-dump-root", "", "--validate-config"],
            pass_fds=[fd], capture_output=True, timeout=20, check=False,
        )  # fmt: skip
    finally:
        listen_sock.close()
    return process.returncode


def test_validate_config_valid(tmp_path: Path) -> None:
    """test_validate_config.py TestValidateConfig.test_valid_config: exit 0."""
    config = tmp_path / "test_ascii.json"
    config.write_text(mcrouter_config("test_ascii"))
    assert validate(tmp_path, config) == 0


def test_validate_config_invalid(tmp_path: Path) -> None:
    """test_validate_config.py TestValidateConfig.test_invalid_config: exits, not 0."""
    assert validate(tmp_path, CONFIGS / "refused" / "invalid_config.json") not in (0, None)


# -- test_probe_timeout.py ------------------------------------------------------------


@pytest.mark.parametrize("timeouts_until_tko", ["1", "2"])
def test_probe_timeout(
    timeouts_until_tko: str,
    fault_server: FaultServerFactory,
    proxy_factory: ProxyFactory,
    tmp_path: Path,
) -> None:
    """test_probe_timeout.py TestProbeTimeout, TestRequestTimeout: a server that never
    answers times the request out (and, at one timeout, is TKO and probed); a reload
    that drops it while its probe or request is out leaves the proxy serving."""
    sleeper = fault_server(never_answer)
    proxy = proxy_factory(
        mcrouter_config("test_probe_timeout", [sleeper.port]),
        "-t", "2000", "--timeouts-until-tko", timeouts_until_tko, "-r", "100",
        "--reconfiguration-delay-ms", "100",
    )  # fmt: skip
    with mc(proxy) as mcr:
        resp = mcr.get("key")
        assert isinstance(resp, str) and "SERVER_ERROR" in resp
        if timeouts_until_tko == "1":  # the probe is sent (mcrouter sleeps 0.15 s for it)
            assert poll(lambda: "probes:1" in next(iter(mcr.stats("servers").values())))
        config_file = next(tmp_path.glob("config-*.json"))
        config_file.write_text((CONFIGS / "test_probe_timeout_reconfig.json").read_text())
        assert poll(lambda: "config reloaded" in proxy.log(), seconds=10)
        assert proxy.process.poll() is None
        assert mcr.set("key", "value") is not True  # port 0: nothing there
    with connect(proxy.port) as client:
        assert client.call(b"version\r\n").startswith(b"VERSION ")
