"""The table of stats: `stats`, `stats servers`, `stats reset` and worker snapshots follow it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import Client, Memcached, free_port, pool_config, stats_on, wait_for_port

import mcrouter_trio
from mcrouter_trio.counters import PROXY_STATS, SERVER_STATS, Group, Kind, Source, Stat
from mcrouter_trio.messages import Op, Request
from mcrouter_trio.ops import ProxyStats, SharedStats, StatsBoard
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.upstream import Destination

PLAIN = ServerSpec("127.0.0.1", 11311)
TLS = ServerSpec("127.0.0.1", 11312, mech="ssl")


def stats_lines(reply: bytes) -> list[tuple[str, str]]:
    lines = reply.decode().split("\r\n")
    assert lines[-2:] == ["END", ""], reply
    return [(line.split(" ", 2)[1], line.split(" ", 2)[2]) for line in lines[:-2]]


def bump_everything(
    stats: ProxyStats, destinations: dict[ServerSpec, Destination], base: int
) -> None:
    """A distinct value in every stored and per-command counter, from `base` up."""
    value = base
    for stat in PROXY_STATS:
        value += 1
        if stat.source is Source.STORED:
            setattr(stats, stat.name, value)
        elif stat.op is not None:
            stats.ops[stat.op] = value
    for dest in destinations.values():
        for stat in SERVER_STATS:
            value += 1
            if stat.source is Source.STORED:
                setattr(dest.stats, stat.name, value)


def test_names_are_unique_and_declarations_consistent() -> None:
    for table in (PROXY_STATS, SERVER_STATS):
        names = [stat.name for stat in table]
        assert len(names) == len(set(names)), names
    ops = [stat.op for stat in PROXY_STATS if stat.op is not None]
    assert len(ops) == len(set(ops))
    for stat in PROXY_STATS:
        if stat.reset_to is not None:
            assert stat.resets
            assert stat.reset_to in {s.name for s in PROXY_STATS if s.source is Source.STORED}
    with pytest.raises(ValueError, match="computed"):
        Stat("x", Kind.GAUGE, Source.COMPUTED, "x", resets=True)
    with pytest.raises(ValueError, match="op"):
        Stat("x", Kind.COUNTER, Source.OP, "x")
    with pytest.raises(ValueError, match="op"):
        Stat("x", Kind.COUNTER, Source.STORED, "x", op=Op.GET)


def test_stats_all_shows_every_proxy_stat_in_table_order() -> None:
    stats = ProxyStats()
    destinations = {PLAIN: Destination(PLAIN)}
    bump_everything(stats, destinations, 0)
    shown = stats_lines(stats.reply([b"all"], destinations).raw)
    commands = [f"{stat.name}_count" for stat in PROXY_STATS if stat.op is not None]
    assert [name for name, _ in shown] == [stat.name for stat in PROXY_STATS] + commands
    lines = dict(shown)
    for stat in PROXY_STATS:
        if Group.RATE in stat.groups:
            continue  # per second over the window (test_stats_window.py)
        if stat.source is Source.STORED:
            assert lines[stat.name] == str(getattr(stats, stat.name))
        elif stat.op is not None:
            assert lines[stat.name] == str(stats.ops[stat.op])


@pytest.mark.parametrize(
    ("word", "group"),
    [(b"", Group.BASIC), (b"detailed", Group.DETAILED), (b"count", Group.COUNT)],
)
def test_each_stats_group_shows_the_stats_of_its_group(word: bytes, group: Group) -> None:
    stats = ProxyStats()
    destinations = {PLAIN: Destination(PLAIN)}
    shown = [name for name, _ in stats_lines(stats.reply([word] if word else [], destinations).raw)]
    expected = [stat.name for stat in PROXY_STATS if group in stat.groups]
    if group is Group.COUNT:
        expected += [f"{stat.name}_count" for stat in PROXY_STATS if stat.op is not None]
    assert shown == expected


def test_stats_ods_shows_the_numbers_of_its_group_then_the_requests_per_command() -> None:
    stats = ProxyStats()
    destinations = {PLAIN: Destination(PLAIN)}
    shown = [name for name, _ in stats_lines(stats.reply([b"ods"], destinations).raw)]
    expected = [
        stat.name
        for stat in PROXY_STATS
        if Group.ODS in stat.groups and not stat.text and stat.op is None
    ]
    expected += [f"{stat.name}_count" for stat in PROXY_STATS if stat.op is not None]
    assert shown == expected
    assert "result_client_error_count" in shown and "ps_rss" in shown


def test_stats_servers_shows_every_server_stat_and_tls_ones_only_for_tls() -> None:
    stats = ProxyStats()
    destinations = {PLAIN: Destination(PLAIN), TLS: Destination(TLS)}
    bump_everything(stats, destinations, 0)
    lines = dict(stats_lines(stats.reply([b"servers"], destinations).raw))
    for server, dest in destinations.items():
        (line,) = [v for k, v in lines.items() if k.startswith(f"{server.address}:")]
        gauges, counters = line.split(f" {dest.state}:1; ")
        shown = {s.name for s in SERVER_STATS if server.mech == "ssl" or not s.tls_only}
        fields = dict(field.split(":") for field in [*gauges.split(" "), *counters.split(" ")])
        assert set(fields) == shown, line
        # mcrouter's fields where mcrouter has them: its gauges before the state, the
        # rest after in table order; the proxy's own (ejection) fields are appended.
        leading = [field.split(":")[0] for field in gauges.split(" ")]
        assert leading == ["avg_latency_us", "pending_reqs", "inflight_reqs"]
        assert list(fields) == [s.name for s in SERVER_STATS if s.name in shown]
        assert list(fields)[-2:] == ["ejections", "ejected"]
        for stat in SERVER_STATS:
            if stat.name in shown and stat.source is Source.STORED:
                assert fields[stat.name] == str(getattr(dest.stats, stat.name))
    assert "tls_handshakes" in lines[next(k for k in lines if k.startswith(TLS.address))]


def test_stats_reset_zeroes_exactly_the_resettable_stats() -> None:
    stats = ProxyStats()
    destinations = {PLAIN: Destination(PLAIN)}
    bump_everything(stats, destinations, 0)
    before = stats.values(destinations)
    servers_before = {spec: dict(vars_of(dest)) for spec, dest in destinations.items()}
    assert stats.reply([b"reset"], destinations).raw == b"RESET\r\n"
    after = stats.values(destinations)
    for stat in PROXY_STATS:
        if stat.kind is Kind.INFO or stat.source is Source.COMPUTED:
            continue  # the clock and the process move on
        if not stat.resets:
            expected = before[stat.name]
        elif stat.reset_to is not None:
            expected = before[stat.reset_to]
        else:
            expected = 0
        assert after[stat.name] == expected, stat.name
    # `stats reset` leaves per-server counters as they were.
    assert {spec: dict(vars_of(dest)) for spec, dest in destinations.items()} == servers_before


def vars_of(dest: Destination) -> Iterator[tuple[str, int]]:
    for stat in SERVER_STATS:
        if stat.source is Source.STORED:
            yield stat.name, getattr(dest.stats, stat.name)


#: Computed stats that hold still between two looks in a test (no clock, no CPU time).
_STILL_COMPUTED = frozenset(
    {
        "proxy_reqs_processing",
        "destination_pending_reqs",
        "destination_inflight_reqs",
        "request_sent_count",
        "request_replied_count",
        "request_success_count",
        "num_client_connections",
    }
)


def test_a_worker_snapshot_carries_every_summed_stat_through_the_board() -> None:
    board = StatsBoard.for_servers(workers=2, servers=2)
    mine, theirs = ProxyStats(), ProxyStats()
    mine.shared, theirs.shared = SharedStats(board, 0), SharedStats(board, 1)
    my_dests = {PLAIN: Destination(PLAIN), TLS: Destination(TLS)}
    their_dests = {PLAIN: Destination(PLAIN), TLS: Destination(TLS)}
    bump_everything(mine, my_dests, 0)
    bump_everything(theirs, their_dests, 1000)
    theirs.publish(their_dests)
    own = mine.values(my_dests)
    other = theirs.values(their_dests)
    every = dict(stats_lines(mine.reply([b"all"], my_dests).raw))
    for stat in PROXY_STATS:
        if stat.source is Source.COMPUTED and stat.name not in _STILL_COMPUTED:
            continue  # the clock and CPU time move on
        if Group.RATE in stat.groups:
            continue  # per second over the window (test_stats_window.py)
        expected = own[stat.name] + other[stat.name] if stat.summed else own[stat.name]
        assert every[stat.name] == format(expected, stat.format), stat.name
    servers = dict(stats_lines(mine.reply([b"servers"], my_dests).raw))
    for spec in my_dests:
        (line,) = [v for k, v in servers.items() if k.startswith(f"{spec.address}:")]
        for stat in SERVER_STATS:
            if stat.source is Source.STORED and (spec.mech == "ssl" or not stat.tls_only):
                total = getattr(my_dests[spec].stats, stat.name)
                total += getattr(their_dests[spec].stats, stat.name)
                assert f" {stat.name}:{total}" in f" {line}", (stat.name, line)


# --- a stat added to the table: one line, and every way of reading stats shows it ---


@pytest.fixture
def package_with_two_more_stats(tmp_path: Path) -> Path:
    """A copy of the package whose table has two more lines: a stored and a per-op counter."""
    package = Path(mcrouter_trio.__file__).parent
    shutil.copytree(package, tmp_path / "mcrouter_trio", ignore=shutil.ignore_patterns("*.pyc"))
    table = tmp_path / "mcrouter_trio" / "counters.py"
    text = table.read_text()
    anchor = '    _requests("cmd_meta_arithmetic", Op.MA),\n'
    assert anchor in text
    added = (
        '    _requests("cmd_version", Op.VERSION),\n'
        '    _connections("test_widgets", "a counter nothing bumps yet"),\n'
    )
    table.write_text(text.replace(anchor, anchor + added))
    return tmp_path


def test_a_stat_added_to_the_table_is_counted_summed_and_reset(
    memcached: Memcached, package_with_two_more_stats: Path, tmp_path: Path
) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "mcrouter_trio", "-p", str(port), "--listen-addresses",
        "127.0.0.1", "--config-str", json.dumps(pool_config(memcached.address)),
        "--num-proxies", "2", "-L", str(tmp_path / "proxy.log"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(package_with_two_more_stats)}
    # From the copy: `-m` puts the working directory ahead of PYTHONPATH.
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        # Until both workers have served some: the second may start listening later.
        pids: set[int] = set()
        versions = 0
        deadline = time.monotonic() + 10
        while (len(pids) < 2 or versions < 24) and time.monotonic() < deadline:
            with closing(Client(port)) as client:
                assert client.call(b"version\r\n").startswith(b"VERSION ")
                versions += 1
                stats = stats_on(client)
                pids.add(int(stats["pid"]))
                assert stats["test_widgets"] == "0"
                assert list(stats)[-2:] == ["cmd_version", "test_widgets"]
        assert len(pids) == 2, pids
        # Each worker counted its own versions; either one sums them with the other's.
        wait_for_every_worker(port, pids, "cmd_version", str(versions))
        with closing(Client(port)) as client:
            assert client.call(b"stats reset\r\n") == b"RESET\r\n"
        wait_for_every_worker(port, pids, "cmd_version", "0")
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_every_worker(port: int, pids: set[int], name: str, value: str) -> None:
    deadline = time.monotonic() + 10
    agreed: set[int] = set()
    seen: dict[str, str] = {}
    while agreed != pids and time.monotonic() < deadline:
        with closing(Client(port)) as client:
            seen = stats_on(client)
        if seen[name] == value:
            agreed.add(int(seen["pid"]))
        else:
            agreed.discard(int(seen["pid"]))
            time.sleep(0.1)
    assert agreed == pids, (name, value, seen)


def test_stats_servers_counts_a_request_not_written_yet_as_pending() -> None:
    """mcrouter's `pending_reqs` (queued) apart from `inflight_reqs` (written)."""
    dest = Destination(PLAIN)  # never connected: what is sent stays queued
    dest.send(Request(Op.GET, b"k", (b"k",)), 1.0)
    dest.send(Request(Op.SET, b"k", None, (b"0", b"0", b"1"), b"v"), 1.0)
    assert dest.outstanding() == (2, 0)
    (line,) = [v for _, v in stats_lines(ProxyStats().reply([b"servers"], {PLAIN: dest}).raw)]
    assert line.startswith("avg_latency_us:0.000 pending_reqs:2 inflight_reqs:0 new:1; "), line
