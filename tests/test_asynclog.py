"""The reliable delete stream end to end: spooling failed deletes, replaying them.

Backends are real memcached processes (stopped and restarted) and a fault server that
never answers; the spool files are parsed back with the format module, and whether a
replayed delete happened is checked on memcached itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FaultServer, Handler, Memcached, Proxy, connect, poll, pool_config, stats_on
from test_faults import CONNECT_ERROR, REPLY_TIMEOUT, never_answer

from mcrouter_trio.ops._asynclog import PROGRESS_FILE, SpooledDelete, parse_records

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

#: Probes 1 s after a server is marked TKO: the server is back (and the test has set
#: its keys) well before the replayer may send to it.
PROBE_AFTER_1S = ("-r", "1000")


def spooled(root: Path) -> list[SpooledDelete]:
    """Every delete record in the spool under `root`, file by file."""
    records: list[SpooledDelete] = []
    for path in sorted(root.glob("*/*")):
        found, bad = parse_records(path.read_bytes())
        assert not bad, path.read_bytes()
        records += found
    return records


def spool_lines(root: Path) -> list[bytes]:
    return [line for path in sorted(root.glob("*/*")) for line in path.read_bytes().splitlines()]


def delete_all(port: int, keys: list[bytes]) -> list[bytes]:
    with connect(port, timeout=30) as client:
        client.send(b"".join(b"delete " + key + b"\r\n" for key in keys))
        return [client.read_until(b"\r\n") for _ in keys]


def set_directly(server: Memcached, keys: list[bytes]) -> None:
    with connect(server.port) as client:
        client.send(b"".join(b"set " + key + b" 0 0 1 noreply\r\nv\r\n" for key in keys))
        assert client.call(b"version\r\n").startswith(b"VERSION")


def present(server: Memcached, keys: list[bytes]) -> list[bytes]:
    """The keys of `keys` that `server` holds."""
    found: list[bytes] = []
    with connect(server.port) as client:
        for start in range(0, len(keys), 100):
            reply = client.call(
                b"get " + b" ".join(keys[start : start + 100]) + b"\r\n", b"END\r\n"
            )
            found += [line.split()[1] for line in reply.split(b"\r\n") if line.startswith(b"VALUE")]
    return found


def proxy_stat(proxy: Proxy, name: str) -> int:
    with connect(proxy.port) as client:
        return int(stats_on(client)[name])


@pytest.mark.parametrize("version2", [False, True])
def test_a_failed_delete_is_on_disk_and_answered_not_found(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path, version2: bool
) -> None:
    spool = tmp_path / "spool"
    memcached.stop()
    flags = ["--use-asynclog-version2"] if version2 else []
    proxy = proxy_factory(pool_config(memcached.address), "-a", str(spool), *flags)
    with connect(proxy.port) as client:
        assert client.call(b"delete gone\r\n") == b"NOT_FOUND\r\n"
        # Now TKO (a refused connect): answered at once, spooled all the same.
        assert client.call(b"delete also_gone\r\n") == b"NOT_FOUND\r\n"
        # Only deletes are spooled: a set gets its error.
        assert client.call(b"set k 0 0 1\r\nv\r\n").startswith(b"SERVER_ERROR")
        assert int(stats_on(client)["asynclog_spooled"]) == 2
    records = spooled(spool)
    assert [(r.host, r.port, r.key) for r in records] == [
        ("127.0.0.1", memcached.port, b"gone"),
        ("127.0.0.1", memcached.port, b"also_gone"),
    ]
    first = spool_lines(spool)[0]
    if version2:
        assert first.startswith(b'["AS2.0",')
        assert f'"h":"[127.0.0.1]:{memcached.port}"'.encode() in first
        assert b'"p":"A","k":"gone","a":{"al":1}' in first
        assert all(r.pool == "A" for r in records)
    else:
        assert first.startswith(b'["AS1.0",')
        assert first.endswith(f'"C",["127.0.0.1",{memcached.port},"delete gone\\r\\n"]]'.encode())
    # mcrouter's names: <YYYYMMDD>T<HH>-<hour epoch>/<YYYYMMDD>T<HHMMSS>-<epoch>-<service>-...
    (path,) = spool.glob("*/*")
    hour, name = path.parent.name, path.name
    assert int(hour.split("-")[1]) % 3600 == 0
    assert name.split("-")[2:4] == ["mcrouter", str(proxy.port)]


def test_a_delete_that_times_out_is_spooled(
    fault_server: Callable[[Handler], FaultServer], proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    backend = fault_server(never_answer)
    spool = tmp_path / "spool"
    proxy = proxy_factory(pool_config(backend.address), "-t", "200", "-a", str(spool))
    with connect(proxy.port) as client:
        assert client.call(b"delete slow\r\n") == b"NOT_FOUND\r\n"
        assert client.call(b"get slow\r\n") == REPLY_TIMEOUT
    assert [r.key for r in spooled(spool)] == [b"slow"]


def test_deletes_that_worked_or_missed_are_not_spooled(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    proxy = proxy_factory(pool_config(memcached.address), "-a", str(spool))
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"delete k\r\n") == b"DELETED\r\n"
        assert client.call(b"delete k\r\n") == b"NOT_FOUND\r\n"
    assert spooled(spool) == []


@pytest.mark.parametrize(
    ("flags", "pool_route"),
    [
        (["--asynclog-disable"], "PoolRoute|A"),
        ([], {"type": "PoolRoute", "pool": "A", "asynclog": False}),
        ([], "Pool|A"),  # mcrouter: a bare pool's servers are not under an AsynclogRoute
    ],
)
def test_without_the_delete_stream_a_failed_delete_gets_its_error(
    memcached: Memcached,
    proxy_factory: ProxyFactory,
    tmp_path: Path,
    flags: list[str],
    pool_route: object,
) -> None:
    spool = tmp_path / "spool"
    memcached.stop()
    config = pool_config(memcached.address)
    config["route"] = pool_route
    if pool_route == "Pool|A":
        config["route"] = {"type": "FailoverRoute", "children": "Pool|A"}
    proxy = proxy_factory(config, "-a", str(spool), *flags)
    with connect(proxy.port) as client:
        assert client.call(b"delete k\r\n") == CONNECT_ERROR
    assert spooled(spool) == []


def test_an_unwritable_spool_answers_the_error_and_logs_once(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    memcached.stop()
    proxy = proxy_factory(pool_config(memcached.address), "-a", str(blocker / "spool"))
    with connect(proxy.port) as client:
        assert client.call(b"delete k1\r\n") == CONNECT_ERROR
        replies = [client.call(b"delete k%d\r\n" % n) for n in range(2, 5)]
        assert all(reply.startswith(b"SERVER_ERROR") for reply in replies), replies
        assert client.call(b"version\r\n").startswith(b"VERSION")
    assert proxy.process.poll() is None
    assert proxy.log().count("cannot write the delete spool") == 1


def test_the_replayer_deletes_once_the_server_is_back(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    memcached.stop()
    proxy = proxy_factory(pool_config(memcached.address), "-a", str(spool), *PROBE_AFTER_1S)
    keys = [b"k1", b"k2", b"k3"]
    assert delete_all(proxy.port, keys) == [b"NOT_FOUND\r\n"] * 3
    assert proxy_stat(proxy, "asynclog_pending") in (0, 3)  # 3 once a pass has run
    memcached.restart()
    set_directly(memcached, [*keys, b"other"])
    assert poll(lambda: not present(memcached, keys), seconds=15), proxy.log()
    assert present(memcached, [b"other"]) == [b"other"]
    # Counted once the progress file is saved, a moment after memcached deleted the keys.
    assert poll(lambda: proxy_stat(proxy, "asynclog_replayed") == 3), proxy.log()
    assert poll(lambda: proxy_stat(proxy, "asynclog_pending") == 0)
    progress = (spool / PROGRESS_FILE).read_text()
    assert f"127.0.0.1:{memcached.port}" in progress


def test_no_delete_is_lost_when_the_proxy_is_killed_in_the_middle_of_a_replay(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    keys = [b"key%05d" % n for n in range(3000)]
    memcached.stop()
    first = proxy_factory(pool_config(memcached.address), "-a", str(spool))
    assert delete_all(first.port, keys) == [b"NOT_FOUND\r\n"] * len(keys)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert len(spooled(spool)) == len(keys)

    memcached.restart()
    set_directly(memcached, keys)
    slow = ("-a", str(spool), "--asynclog-replay-rate", "1000")
    second = proxy_factory(pool_config(memcached.address), *slow)
    assert poll(lambda: proxy_stat(second, "asynclog_replayed") > 0, seconds=15)
    second.process.send_signal(signal.SIGKILL)
    second.process.wait()
    left = present(memcached, keys)
    assert 0 < len(left) < len(keys)  # killed in the middle of the replay

    third = proxy_factory(pool_config(memcached.address), "-a", str(spool))
    assert poll(lambda: not present(memcached, keys), seconds=30), third.log()
    assert poll(lambda: proxy_stat(third, "asynclog_pending") == 0)


def _replay(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "replay", str(spool), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_replay_command_sends_the_spool_and_reports(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    memcached.stop()
    proxy = proxy_factory(pool_config(memcached.address), "-a", str(spool))
    assert delete_all(proxy.port, [b"a", b"b"]) == [b"NOT_FOUND\r\n"] * 2
    proxy.stop()

    down = _replay(spool)
    assert down.returncode == 1, down
    assert f"127.0.0.1:{memcached.port}: 2 deletes left" in down.stdout

    memcached.restart()
    set_directly(memcached, [b"a", b"b", b"c"])
    done = _replay(spool)
    assert done.returncode == 0, done
    assert f"127.0.0.1:{memcached.port}: 2 deletes replayed" in done.stdout
    assert "replayed 2, left 0" in done.stdout
    assert present(memcached, [b"a", b"b", b"c"]) == [b"c"]

    again = _replay(spool)
    assert again.returncode == 0, again
    assert "replayed 0, left 0" in again.stdout
