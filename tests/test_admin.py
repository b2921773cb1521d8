"""Admin keys (`get __mcrouter__.*`), stats groups, memcached's admin commands and the
stats files, end to end through the proxy against real memcached."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Memcached, connect, direct_get, poll, pool_config

from mcrouter_trio.config import load_config
from mcrouter_trio.downstream._admin import AdminCommands, AdminInfo, route_servers
from mcrouter_trio.messages import Op

ProxyFactory = Any


def admin_get(port: int, command: str) -> bytes:
    """The value of `get __mcrouter__.<command>` (asserting the VALUE framing)."""
    key = f"__mcrouter__.{command}".encode()
    with connect(port) as client:
        raw = client.call(b"get " + key + b"\r\n", b"END\r\n")
    head, _, rest = raw.partition(b"\r\n")
    assert head.startswith(b"VALUE " + key + b" 0 "), raw
    length = int(head.rsplit(b" ", 1)[1])
    assert rest[length:] == b"\r\nEND\r\n", raw
    return rest[:length]


def two_pool_config(first: str, second: str) -> dict[str, Any]:
    return {
        "pools": {"A": {"servers": [first]}, "B": {"servers": [second]}},
        "route": {"type": "FailoverRoute", "children": ["PoolRoute|A", "PoolRoute|B"]},
    }


def test_admin_keys_are_answered_not_forwarded(
    memcached_factory: Any, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    first, second = memcached_factory(), memcached_factory()
    config = two_pool_config(first.address, second.address)
    proxy = proxy_factory(config)
    config_path = tmp_path / f"config-{proxy.port}.json"
    text = config_path.read_text()

    assert admin_get(proxy.port, "route(get,somekey)") == first.address.encode()
    assert admin_get(proxy.port, "config_file") == str(config_path).encode()
    assert (
        admin_get(proxy.port, "config_md5_digest")
        == hashlib.md5(text.encode()).hexdigest().encode()
    )
    assert json.loads(admin_get(proxy.port, "config_sources_info")) == {
        "config_file": str(config_path),
        "mcrouter_config": hashlib.md5(text.encode()).hexdigest(),
    }
    assert json.loads(admin_get(proxy.port, "preprocessed_config")) == config
    assert admin_get(proxy.port, "options(enable_flush_cmd)") == b"0"
    assert f"ports {proxy.port}\n".encode() in admin_get(proxy.port, "options") + b"\n"
    assert admin_get(proxy.port, "options(nope)") == b"ERROR: options: option nope not found"
    assert admin_get(proxy.port, "version").startswith(b"1.6.18 mcrouter-trio/")
    assert int(admin_get(proxy.port, "hostid")) >= 0
    assert int(admin_get(proxy.port, "config_age")) >= 0
    assert admin_get(proxy.port, "verbosity(3)").endswith(b" -> 3")
    assert admin_get(proxy.port, "verbosity") == b"3"
    pools = json.loads(admin_get(proxy.port, "pools"))
    assert pools["B"] == [
        f"host|pool=B|id=0|ap={second.address}:ascii:plain:notcompressed|timeout=1000ms"
        "|keep_routing_prefix=false|msb=0"
    ]
    handles = admin_get(proxy.port, "route_handles(get,somekey)").decode().split("\n")
    assert handles[:3] == ["proxy", " root", "  FailoverRoute"]
    assert handles[-1].startswith(f"    host|pool=B|id=0|ap={second.address}:")
    assert admin_get(proxy.port, "config") == b"ERROR: unknown command: config"
    assert admin_get(proxy.port, "route(get)") == b"ERROR: route: 2 args expected"
    assert admin_get(proxy.port, "route(lease,k)") == b"ERROR: route: unknown request lease"
    # Never forwarded: the servers saw no admin key.
    for server in (first, second):
        with connect(server.port) as client:
            assert b"cmd_get 0\r\n" in client.call(b"stats\r\n", b"END\r\n")


def test_route_follows_failover_past_a_down_server(
    memcached_factory: Any, proxy_factory: ProxyFactory
) -> None:
    first, second = memcached_factory(), memcached_factory()
    proxy = proxy_factory(two_pool_config(first.address, second.address))
    first.stop()
    with connect(proxy.port) as client:  # the proxy learns that the first is down
        assert client.call(b"get k\r\n", b"END\r\n") == b"END\r\n"
    assert admin_get(proxy.port, "route(set,k)") == second.address.encode()


def test_multiget_with_an_admin_key(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
        raw = client.call(b"get a __mcrouter__.hostid b\r\n", b"END\r\n")
    assert raw.startswith(b"VALUE a 0 1\r\nx\r\nVALUE __mcrouter__.hostid 0 ")
    assert raw.endswith(b"\r\nEND\r\n") and raw.count(b"END") == 1


def test_set_of_an_admin_looking_key_is_forwarded(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """mcrouter intercepts `get` only; other commands are routed as usual."""
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(b"set __mcrouter__.x 0 0 1\r\ny\r\n") == b"STORED\r\n"
    assert direct_get(memcached, b"__mcrouter__.x") == b"VALUE __mcrouter__.x 0 1\r\ny\r\nEND\r\n"


def test_route_in_memory_skips_down_servers_and_records_each_reached() -> None:
    config = load_config(
        json.dumps(two_pool_config("127.0.0.1:5001", "127.0.0.1:5002")), source="test"
    )
    tree = config.tree()
    up = route_servers(tree, Op.GET, b"k", lambda _server: False)
    down = route_servers(tree, Op.GET, b"k", lambda server: server.port == 5001)
    assert [s.port for s in up] == [5001]
    assert [s.port for s in down] == [5002]
    commands = AdminCommands(AdminInfo(None, lambda: "", {}, 0))
    reply = commands.answer(b"__mcrouter__.config_file", tree, lambda _server: False)
    assert (
        reply.raw
        == b"VALUE __mcrouter__.config_file 0 28\r\nERROR: no config file found!\r\nEND\r\n"
    )


def test_route_subcommand_answers_offline(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(two_pool_config("127.0.0.1:5001", "[::1]:5002")))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcrouter_trio",
            "route",
            "-f",
            str(path),
            "--op",
            "set",
            "a",
            "/x/y/b",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "a: 127.0.0.1:5001\n/x/y/b: (no route)\n"


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"stats items\r\n", b"END\r\n"),
        (b"stats slabs\r\n", b"END\r\n"),
        (b"stats sizes\r\n", b"END\r\n"),
        (b"stats conns\r\n", b"END\r\n"),
        (b"stats settings\r\n", b"END\r\n"),
        (b"stats cachedump 1 1\r\n", b"END\r\n"),
        (b"stats detail dump\r\n", b"END\r\n"),
        (b"stats detail on\r\n", b"OK\r\n"),
        (b"stats detail off\r\n", b"OK\r\n"),
        (b"stats cmd-error\r\n", b"END\r\n"),
        (b"stats suspect_servers\r\n", b"END\r\n"),
        (b"stats cachedump 1\r\n", b"CLIENT_ERROR bad stats command\r\n"),
        (b"cache_memlimit 64\r\n", b"OK\r\n"),
        (b"cache_memlimit 7\r\n", b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
        (
            b"cache_memlimit 1000000001\r\n",
            b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
        ),
        (b"cache_memlimit x\r\n", b"ERROR\r\n"),
        (b"cache_memlimit\r\n", b"ERROR\r\n"),
        (b"cache_memlimit 64 noreply\r\nmn\r\n", b"MN\r\n"),
    ],
)
def test_memcached_admin_commands_get_a_parsable_answer(
    memcached: Memcached, proxy_factory: ProxyFactory, command: bytes, reply: bytes
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(command, reply[-5:]) == reply


def test_mcrouter_stats_groups(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        client.call(b"get a\r\nget b\r\n", b"END\r\nEND\r\n")
        count = client.call(b"stats count\r\n", b"END\r\n")
        ods = client.call(b"stats ods\r\n", b"END\r\n")
        detailed = client.call(b"stats detailed\r\n", b"END\r\n")
        version = client.call(b"stats version\r\n", b"END\r\n")
    assert b"STAT cmd_get_count 2\r\n" in count
    assert b"STAT cmd_get_count 2\r\n" in ods and b"STAT uptime " in ods
    assert b"STAT version" not in ods
    assert b"STAT cmd_get 2\r\n" in detailed
    assert version.startswith(b"STAT mcrouter-version 1.6.18 mcrouter-trio/")


def test_stats_files_are_written_as_mcrouter_names_them(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    root = tmp_path / "stats"
    proxy = proxy_factory(
        pool_config(memcached.address),
        "--stats-root", str(root), "--stats-logging-interval", "100",
    )  # fmt: skip
    prefix = f"libmcrouter.mcrouter.{proxy.port}"
    with connect(proxy.port) as client:
        client.call(b"get a\r\n", b"END\r\n")

    def stats() -> dict[str, Any]:
        path = root / f"{prefix}.stats"
        return json.loads(path.read_text()) if path.exists() else {}

    assert poll(lambda: stats().get(f"{prefix}.cmd_get_count") == 1)
    assert stats()[f"{prefix}.num_servers"] == 1
    assert all(key.startswith(prefix + ".") for key in stats())
    options = json.loads((root / f"{prefix}.startup_options").read_text())
    assert options["stats_root"] == str(root)
    assert options["pid"] == str(proxy.process.pid)
    sources = json.loads((root / f"{prefix}.config_sources_info").read_text())
    assert sources["config_file"].endswith(f"config-{proxy.port}.json")


def test_pymemcache_integration_suite_passes_through_the_proxy(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """pymemcache's own integration tests, from its installed package, against the proxy."""
    proxy = proxy_factory(pool_config(memcached.address), "--enable-flush-cmd")
    spec = importlib.util.find_spec("pymemcache.test.test_integration")
    assert spec is not None and spec.origin is not None
    suite = Path(spec.origin)
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--rootdir", str(tmp_path), str(suite),
            "-m", "integration", "-k", "not tls",
            "--server", "127.0.0.1", "--port", str(proxy.port),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " failed" not in result.stdout
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) >= 100, result.stdout[-2000:]


def test_preprocessed_config_shows_the_config_with_its_macros_expanded(
    memcached: Any, proxy_factory: ProxyFactory
) -> None:
    config = {
        "macros": {"main": {"type": "constDef", "result": "PoolRoute|A"}},
        "pools": {"A": {"servers": [memcached.address]}},
        "route": "%main%",
    }
    proxy = proxy_factory(config)
    assert json.loads(admin_get(proxy.port, "preprocessed_config")) == {
        "pools": {"A": {"servers": [memcached.address]}},
        "route": "PoolRoute|A",
    }
