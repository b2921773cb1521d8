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

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.config import load_config
from mcrouter_trio.downstream._admin import AdminCommands, AdminInfo, key_buckets, route_servers
from mcrouter_trio.downstream._admin_request import AdminError, admin_request
from mcrouter_trio.hashing import ch3, spooky_hash32
from mcrouter_trio.messages import Op, Request
from mcrouter_trio.ops._host import local_host_id

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
    assert admin_get(proxy.port, "version").startswith(b"1.6.18+mcrouter-trio-")
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
    assert version.startswith(b"STAT mcrouter-version 1.6.18+mcrouter-trio-")


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


def pretty(value: object) -> bytes:
    """folly's toPrettySortedJson, which mcrouter's JSON answers use."""
    return json.dumps(value, indent=2, sort_keys=True).encode()


def admin_table_config(first: str, second: str) -> dict[str, Any]:
    """Sets split by value size (JSON requests route differently), gets warmed from a
    bucketized pool, servers with failure domains."""
    bucketized = {
        "type": "PoolRoute",
        "pool": "B",
        "bucketize": True,
        "total_buckets": 1000,
        "bucketization_keyspace": "main",
    }
    return {
        "pools": {
            "A": {"servers": [first], "failure_domains": ["rack-a"]},
            "B": {"servers": [second]},
            "C": {"inherit": "A"},
        },
        "route": {
            "type": "OperationSelectorRoute",
            "operation_policies": {
                "set": {
                    "type": "L1L2SizeSplitRoute",
                    "threshold": 8,
                    "l1": "PoolRoute|A",
                    "l2": "PoolRoute|B",
                },
            },
            "default_policy": {"type": "WarmUpRoute", "cold": "PoolRoute|A", "warm": bucketized},
        },
    }


def test_every_admin_command_answers_as_mcrouter(
    memcached_factory: Any, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    first, second = memcached_factory(), memcached_factory()
    config = admin_table_config(first.address, second.address)
    proxy = proxy_factory(config, "--config-params", "team:cache,tier:l1")
    config_path = tmp_path / f"config-{proxy.port}.json"
    md5 = hashlib.md5(config_path.read_bytes()).hexdigest()
    a, b = first.address, second.address

    def host(pool: str, address: str) -> str:
        return (
            f"host|pool={pool}|id=0|ap={address}:ascii:plain:notcompressed|timeout=1000ms"
            "|keep_routing_prefix=false|msb=0"
        )

    big_set = '{"key":"k","value":"123456789"}'
    table: list[tuple[str, bytes]] = [
        ("version", SERVER_VERSION.encode()),
        ("config_file", str(config_path).encode()),
        ("config_md5_digest", md5.encode()),
        ("config_sources_info", pretty({"config_file": str(config_path), "mcrouter_config": md5})),
        ("preprocessed_config", pretty(config)),
        ("hostid", str(local_host_id()).encode()),
        ("options(enable_flush_cmd)", b"0"),
        ("options(nope)", b"ERROR: options: option nope not found"),
        ("options(a,b)", b"ERROR: options: 0 or 1 args expected"),
        ("verbosity", b"0"),
        ("verbosity(2)", b"0 -> 2"),
        ("verbosity", b"2"),
        ("verbosity(1,2)", b"ERROR: expected at most 1 argument, got 2"),
        ("pools", pretty({"A": [host("A", a)], "B": [host("B", b)], "C": [host("C", a)]})),
        # A get misses in the cold pool, then asks the warm one.
        ("route(get,k)", f"{a}\r\n{b}".encode()),
        ('route(get,{"key":"k"})', f"{a}\r\n{b}".encode()),
        # A set of a key alone has an empty value: L1; the JSON request's value is big: L2.
        ("route(set,k)", a.encode()),
        (f"route(set,{big_set})", b.encode()),
        ('route(set,{"key":"k","value":"1234567"})', a.encode()),
        ("route(get)", b"ERROR: route: 2 args expected"),
        ("route(lease,k)", b"ERROR: route: unknown request lease"),
        ("route_handles(get)", b"ERROR: route_handles: 2 args expected"),
        ("failure_domains(A)", pretty({a: f"{spooky_hash32(b'rack-a')}()"})),
        ("failure_domains(C)", pretty({a: f"{spooky_hash32(b'rack-a')}()"})),
        ("failure_domains(B)", pretty({b: "0()"})),
        ("failure_domains(nope)", b"{}"),
        ("failure_domains", b"ERROR: failure_domains: 1 arg expected"),
        ("get_bucket(k)", b"k\t%d\tmain\tnull" % ch3(b"k", 1000)),
        ("get_bucket(abc|#|x)", b"abc|#|x\t%d\tmain\tnull" % ch3(b"abc", 1000)),
        ("get_bucket(a,b)", b"ERROR: get_bucket: 1 arg (key) expected"),
        ("config", b"ERROR: unknown command: config"),
    ]
    for command, expected in table:
        assert admin_get(proxy.port, command) == expected, command

    # route_handles takes the JSON form too: the big value's set reaches B only.
    handles = admin_get(proxy.port, f"route_handles(set,{big_set})").decode().split("\n")
    assert handles[:4] == ["proxy", " root", "  OperationSelectorRoute", "   L1L2SizeSplitRoute"]
    assert f"     {host('B', b)}" in handles and f"     {host('A', a)}" not in handles
    handles = admin_get(proxy.port, "route_handles(set,k)").decode().split("\n")
    assert f"     {host('A', a)}" in handles and f"     {host('B', b)}" not in handles

    params_text = admin_get(proxy.port, "global_params")
    params = json.loads(params_text)
    assert params_text == pretty(params)
    base = {
        "default-route": "/././",
        "default-region": ".",
        "default-cluster": ".",
        "hostid": local_host_id(),
        "router-name": "unknown",
        "service-name": "unknown",
        "service-router-capable": 0,
        "router-info-name": "Memcache",
        "num-proxies": 1,
        "team": "cache",
        "tier": "l1",
    }
    assert {name: params[name] for name in base} == base
    assert int(admin_get(proxy.port, "config_age")) >= 0
    assert admin_get(proxy.port, 'route(get,{"key":})').startswith(b"ERROR: json parse error: ")
    # Nothing was forwarded: the servers saw no admin key.
    for server in (first, second):
        with connect(server.port) as client:
            assert b"cmd_get 0\r\n" in client.call(b"stats\r\n", b"END\r\n")


@pytest.mark.parametrize(
    ("op", "argument", "request_"),
    [
        (Op.GET, b"k", Request(Op.GET, b"k", (b"k",))),
        (Op.GET, b'{"key":"k"}', Request(Op.GET, b"k", (b"k",))),
        (Op.GAT, b'{"key":"k","exptime":30}', Request(Op.GAT, b"k", (b"k",), (b"30",))),
        (
            Op.SET,
            b'{"key":"k","value":"abc","flags":5,"exptime":60}',
            Request(Op.SET, b"k", None, (b"5", b"60", b"3"), b"abc"),
        ),
        (
            Op.CAS,
            b'{"key":"k","value":"v","casToken":77}',
            Request(Op.CAS, b"k", None, (b"0", b"0", b"1", b"77"), b"v"),
        ),
        (Op.INCR, b'{"key":"n","delta":5}', Request(Op.INCR, b"n", None, (b"5",))),
        (Op.TOUCH, b'{"key":"k","exptime":9}', Request(Op.TOUCH, b"k", None, (b"9",))),
        (Op.DELETE, b'{"key":"k","exptime":9}', Request(Op.DELETE, b"k")),
        # Wrong types and unknown fields are ignored, as carbon ignores them.
        (
            Op.SET,
            b'{"key":7,"value":1,"flags":"x","exptime":true,"other":1}',
            Request(Op.SET, b"", None, (b"0", b"0", b"0"), b""),
        ),
        (Op.GET, b"{}", Request(Op.GET, b"", (b"",))),
        # Not a JSON request: a key that merely contains braces.
        (Op.GET, b"{k", Request(Op.GET, b"{k", (b"{k",))),
    ],
)
def test_route_takes_a_request_in_json(op: Op, argument: bytes, request_: Request) -> None:
    assert admin_request(op, argument) == request_


@pytest.mark.parametrize("argument", [b"{k}", b'{"key":"k",}', b"{\xff}"])
def test_a_json_request_that_does_not_parse_is_an_error(argument: bytes) -> None:
    with pytest.raises(AdminError, match=r"^json parse error: "):
        admin_request(Op.GET, argument)


def test_get_bucket_lists_each_bucketized_pool_the_get_reaches() -> None:
    def bucketized(pool: str, buckets: int, keyspace: str) -> dict[str, Any]:
        return {
            "type": "PoolRoute",
            "pool": pool,
            "bucketize": True,
            "total_buckets": buckets,
            "bucketization_keyspace": keyspace,
        }

    pools = {
        "A": {"servers": ["127.0.0.1:5001", "127.0.0.1:5002"]},
        "B": {"servers": ["127.0.0.1:5003", "127.0.0.1:5004"]},
    }
    warm_up = {
        "pools": pools,
        "route": {
            "type": "WarmUpRoute",
            "cold": bucketized("A", 1000, "cold"),
            "warm": bucketized("B", 50, "warm"),
        },
    }
    tree = load_config(json.dumps(warm_up), source="test").tree()
    # The cold pool's bucket "misses", so the warm pool is asked too.
    assert key_buckets(tree, b"k") == [
        (b"k", ch3(b"k", 1000), "cold"),
        (b"k", ch3(b"k", 50), "warm"),
    ]
    # Only the routing key is hashed; the key is shown whole, without its routing prefix.
    assert key_buckets(tree, b"/./././a|#|b")[0] == (b"./a|#|b", ch3(b"./a", 1000), "cold")
    plain = {"pools": pools, "route": "PoolRoute|A"}
    assert key_buckets(load_config(json.dumps(plain), source="test").tree(), b"k") == []


def test_route_subcommand_takes_json_requests_and_prints_buckets(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(admin_table_config("127.0.0.1:5001", "127.0.0.1:5002")))

    def route(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mcrouter_trio", "route", "-f", str(path), *argv]
        return subprocess.run(command, capture_output=True, text=True)

    result = route("--op", "set", "k", '{"key":"k","value":"123456789"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'k: 127.0.0.1:5001\n{"key":"k","value":"123456789"}: 127.0.0.1:5002\n'
    result = route("--get-bucket", "k")
    assert result.stdout == f"k: bucket {ch3(b'k', 1000)} of keyspace main\n"
    result = route("{nope}")
    assert result.returncode == 1
    assert result.stdout.startswith("{nope}: ERROR: json parse error: ")
