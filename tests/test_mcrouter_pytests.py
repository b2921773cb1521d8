"""mcrouter's own python tests (`mcrouter/test/test_*.py`), replayed against this proxy.

Each test names the mcrouter test it replays: the same config (from
tests/data/mcrouter-configs, its ports 12345... made the test's memcached servers'),
the same flags, the same requests and the same expected replies. `McClient` answers
as mcrouter's test client (`MCProcess`) does, so the assertions read as theirs: a
miss is None, a stored reply is True, an error line is returned as it came.

Only real memcached stands behind the proxy: the tests that need mcrouter's mock
servers' tricks, Meta-only routes or exact timing are not replayed here.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Client, Memcached, Proxy, connect, free_port, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

CONFIGS = Path(__file__).parent / "data" / "mcrouter-configs"


#: A JSON string that is a server, `"host:port[:attrs]"` (mcrouter's harness's pattern).
_SERVER_STRING = re.compile(r'"([0-9a-zA-Z_.]+):([0-9]+)((?::[0-9a-z_]+){0,3})"')


def mcrouter_config(name: str, servers: Sequence[Memcached | int] = ()) -> str:
    """The config `name` with its servers' ports replaced as mcrouter's harness does
    (`replace_ports`): each distinct port, in order of first appearance, becomes the
    next of `servers`' ports. A port beyond them is left as it is (nothing listens)."""
    ports = [server if isinstance(server, int) else server.port for server in servers]
    mapping: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        host, port, attrs = match.groups()
        if port not in mapping and len(mapping) < len(ports):
            mapping[port] = str(ports[len(mapping)])
        host = "127.0.0.1" if host == "localhost" else host
        return f'"{host}:{mapping.get(port, port)}{attrs}"'

    text = _SERVER_STRING.sub(substitute, (CONFIGS / f"{name}.json").read_text())
    assert len(mapping) == len(ports), f"{name} has fewer servers than {len(ports)}"
    return text


class McClient:
    """mcrouter's test client (MCProcess): its return values, over a raw socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = Client(port)

    def close(self) -> None:
        self.client.close()

    def line(self) -> str:
        return self.client.read_until(b"\r\n").decode()

    def _get(self, command: str, key: str, with_cas: bool = False) -> object:
        self.client.send(f"{command} {key}\r\n".encode())
        found: object = None
        while True:
            line = self.line().strip()
            if line == "END":
                return found
            if line.startswith("VALUE"):
                parts = line.split()
                value = self.client.read_exactly(int(parts[3]) + 2)[:-2].decode()
                found = {"value": value, "cas": int(parts[4])} if with_cas else value
            elif line.startswith("SERVER_ERROR"):
                return line
            else:
                raise AssertionError(f"unexpected reply {line!r} to {command} {key}")

    def get(self, key: str) -> object:
        return self._get("get", key)

    def gets(self, key: str) -> object:
        return self._get("gets", key, with_cas=True)

    def gat(self, exptime: int, key: str) -> object:
        return self._get(f"gat {exptime}", key)

    def gats(self, exptime: int, key: str) -> object:
        return self._get(f"gats {exptime}", key, with_cas=True)

    def _store(self, command: str, key: str, value: object, exptime: int = 0) -> bool | None:
        data = str(value)
        self.client.send(f"{command} {key} 0 {exptime} {len(data)}\r\n{data}\r\n".encode())
        answer = self.line().strip()
        if "ERROR" in answer:
            return None
        return answer == "STORED"

    def set(self, key: str, value: object, exptime: int = 0) -> bool | None:
        return self._store("set", key, value, exptime)

    def add(self, key: str, value: object) -> bool | None:
        return self._store("add", key, value)

    def cas(self, key: str, value: str, token: int) -> bool | None:
        self.client.send(f"cas {key} 0 0 {len(value)} {token}\r\n{value}\r\n".encode())
        answer = self.line().strip()
        return None if "ERROR" in answer else answer == "STORED"

    def delete(self, key: str) -> bool:
        answer = self.client.call(f"delete {key}\r\n".encode()).decode()
        assert re.match("DELETED|NOT_FOUND|SERVER_ERROR", answer), answer
        return answer.startswith("DELETED")

    def arith(self, command: str, key: str, value: int) -> int | str | None:
        answer = self.client.call(f"{command} {key} {value}\r\n".encode()).decode()
        if answer.startswith("NOT_FOUND"):
            return None
        return answer if "ERROR" in answer else int(answer)

    def flush_all(self, delay: int | None = None) -> str:
        command = "flush_all\r\n" if delay is None else f"flush_all {delay}\r\n"
        return self.client.call(command.encode()).decode().rstrip()

    def stats(self, spec: str = "") -> dict[str, str]:
        command = f"stats {spec}\r\n" if spec else "stats\r\n"
        raw = self.client.call(command.encode(), b"END\r\n").decode()
        stats = {}
        for line in raw.split("\r\n"):
            parts = line.split(None, 2)
            if len(parts) == 3:
                stats[parts[1]] = parts[2]
        return stats

    def issue_command_and_read_all(self, command: str) -> str:
        """The reply up to END, or its first line if that is an error (as MCProcess)."""
        self.client.send(command.encode())
        answer = ""
        while True:
            line = self.line().strip()
            if not answer and "ERROR" in line:
                return line
            answer += line + "\r\n"
            if line == "END":
                return answer


@contextmanager
def mc(target: Memcached | Proxy) -> Iterator[McClient]:
    client = McClient(target.port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def start_mcrouter(proxy_factory: ProxyFactory) -> Iterator[Callable[..., McClient]]:
    """Start the proxy on an mcrouter test config; its client is closed at the end."""
    clients: list[McClient] = []

    def start(
        name: str, servers: Sequence[Memcached | int] = (), *args: str, route: str = ""
    ) -> McClient:
        route_args = ("-R", route) if route else ()
        proxy = proxy_factory(mcrouter_config(name, servers), *route_args, *args)
        client = McClient(proxy.port)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


def get_on(server: Memcached, key: str) -> object:
    with mc(server) as client:
        return client.get(key)


def set_on(server: Memcached, key: str, value: str) -> bool | None:
    with mc(server) as client:
        return client.set(key, value)


# -- test_mcrouter_basic.py ----------------------------------------------------------


def test_basic_invalid_key(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_invalid_key"""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.set("/blah/bloh/key", "value") is None
    assert mcr.get("/blah/bloh/key") == "SERVER_ERROR RootRoute: No rh found"


def test_basic_stats_arguments(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_stats (one proxy process)"""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    for command in ("stats\r\n", "stats \r\n", "stats\n", "stats \n"):
        assert mcr.issue_command_and_read_all(command).endswith("END\r\n"), command
    for arg in ("detailed", "cmd-error", "servers", "suspect_servers", "count"):
        # mcrouter answers CLIENT_ERROR and closes; this proxy answers an unknown
        # command as memcached does (README: malformed input keeps the connection).
        for command in (f"stats{arg}\r\n", f"stats{arg}\n"):
            assert mcr.issue_command_and_read_all(command) == "ERROR", command
        for command in (f"stats {arg}\r\n", f"stats {arg} \r\n", f"stats {arg}\n",
                        f"stats {arg} \n"):  # fmt: skip
            assert "END" in mcr.issue_command_and_read_all(command), command
    assert "CLIENT_ERROR" in mcr.issue_command_and_read_all("stats invalid_option\r\n")


def test_basic_cas(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_basic_cas"""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.cas("key", "value", 1) is False  # NOT_FOUND
    assert mcr.gets("key") is None
    assert mcr.add("key", "value")
    ret = mcr.gets("key")
    assert isinstance(ret, dict) and ret["value"] == "value"
    old_cas = ret["cas"]
    assert mcr.cas("key", "value2", ret["cas"])
    ret = mcr.gets("key")
    assert isinstance(ret, dict) and ret["value"] == "value2" and ret["cas"] != old_cas
    assert mcr.set("key", "value2")
    assert mcr.cas("key", "value3", ret["cas"]) is False  # EXISTS
    again = mcr.gets("key")
    assert isinstance(again, dict) and again["value"] == "value2"


def test_basic_double_bind(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_double_bind: a second proxy on
    the same port exits; the first keeps serving."""
    first = proxy_factory(mcrouter_config("mcrouter_test_basic_1_1_1", [memcached]))
    second = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "-p", str(first.port),
         "--listen-addresses", "127.0.0.1", "-f", str(CONFIGS / "test_nullroute.json")],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert second.returncode != 0
    assert first.process.poll() is None
    with mc(first) as mcr:
        assert mcr.set("key", "value")


def test_basic_set_exptime(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic.test_set_exptime"""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.set("key", "value", exptime=10)
    assert mcr.get("key") == "value"
    assert mcr.set("key", "value", exptime=-10)
    assert mcr.get("key") is None


def test_basic_gat_and_gats(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_mcrouter_basic.py TestMcrouterBasicGat.test_basic_gat/gats, without their
    sleep: the ttl is bumped, and the cas of gats is usable."""
    mcr = start_mcrouter("mcrouter_test_basic_1_1_1", [memcached])
    assert mcr.set("key", "value", exptime=3)
    assert mcr.gat(10, "key") == "value"
    ret = mcr.gats(10, "key")
    assert isinstance(ret, dict) and ret["value"] == "value" and ret["cas"]
    assert mcr.cas("key", "value2", ret["cas"])
    assert mcr.get("key") == "value2"


def test_basic_invalid_route_to_default(
    memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestMcrouterInvalidRoute.test_basic_invalid_route"""
    mcr = start_mcrouter(
        "mcrouter_test_basic_1_1_1", [memcached], "--send-invalid-route-to-default"
    )
    assert mcr.set("key", "value")
    assert mcr.get("key") == "value"
    assert mcr.set("/././key", "value2")
    for key in ("/././key", "/f/f/key", "/test/test/key", "key"):
        assert mcr.get(key) == "value2", key
    assert mcr.set("/a/a/key", "value3")
    assert mcr.get("/a/a/key") == "value3"
    assert mcr.get("key") == "value3"
    assert mcr.set("/*/a/key", "value4")
    assert mcr.get("/a/a/key") == "value4"
    assert mcr.get("key") == "value4"
    assert mcr.set("/*/*/key", "value4")
    assert mcr.get("/a/a/key") == "value4"
    assert mcr.get("key") == "value4"


def test_basic_invalid_route_append_prepend(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """test_mcrouter_basic.py TestMcrouterInvalidRouteAppendPrepend (over ASCII, not
    Thrift)."""
    proxy = proxy_factory(
        mcrouter_config("mcrouter_test_basic_1_1_1", [memcached]),
        "--send-invalid-route-to-default",
    )
    with mc(proxy) as mcr:
        assert mcr.set("key", "value")
        assert mcr.client.call(b"append /*/*/key 0 0 3\r\nabc\r\n") == b"STORED\r\n"
        assert mcr.get("/a/a/key") == "valueabc" and mcr.get("key") == "valueabc"
        assert mcr.client.call(b"prepend /*/*/key 0 0 3\r\n123\r\n") == b"STORED\r\n"
        assert mcr.get("/a/a/key") == "123valueabc" and mcr.get("key") == "123valueabc"


def test_basic2_prefix_routing_and_delete(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic2.test_prefix_routing and test_delete"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("mcrouter_test_basic_2_1_1", [mc1, mc2], route="/a/a/")
    assert set_on(mc1, "cluster1_key", "cluster1")
    assert mcr.get("cluster1_key") == "cluster1"
    mcr.set("/b/b/cluster2_key_router", "cluster2_router")
    assert get_on(mc2, "cluster2_key_router") == "cluster2_router"
    assert set_on(mc2, "cluster2_key", "cluster2")
    assert mcr.get("/b/b/cluster2_key") == "cluster2"

    mcr.set("foobarbizbang", "some_value")
    assert mcr.delete("foobarbizbang")
    assert not mcr.delete("foobarbizbang2")
    assert mcr.set("hello", "world")
    assert mcr.get("hello") == "world"


@pytest.mark.parametrize(
    ("args", "word", "count"),
    [
        (("--big-value-split-threshold=100",), "big-value", 1),
        ((), "big-value", 0),
    ],
)
def test_basic2_route_handles_show_big_value(
    args: tuple[str, ...],
    word: str,
    count: int,
    memcached_factory: MemcachedFactory,
    start_mcrouter: Callable[..., McClient],
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasic2.test_use_big_value, test_no_big_value"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("mcrouter_test_basic_2_1_1", [mc1, mc2], *args, route="/a/a/")
    reply = mcr.get("__mcrouter__.route_handles(get,test)")
    assert isinstance(reply, str)
    assert reply.count(word) == count, reply


def three_servers(factory: MemcachedFactory, count: int = 3) -> list[Memcached]:
    return [factory() for _ in range(count)]


def test_basic_all_sync(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllSync.test_basic_all_sync"""
    servers = three_servers(memcached_factory)
    mcr = start_mcrouter("test_basic_all_sync", servers)
    for server in servers:
        assert set_on(server, "key", "value")
    assert mcr.get("key") == "value"
    assert mcr.gat(0, "key") == "value"
    assert mcr.gats(0, "key")
    assert mcr.delete("key")
    assert set_on(servers[0], "key", "value")
    assert not mcr.delete("key")


def test_basic_all_sync_append_prepend(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllSyncAppendPrependTouch.test_append_prepend_all_sync
    (over ASCII): the worst reply wins, NOT_STORED over STORED."""
    servers = three_servers(memcached_factory)
    mcr = start_mcrouter("test_basic_all_sync", servers)
    assert mcr.set("key", "value")
    assert [get_on(server, "key") for server in servers] == ["value"] * 3
    assert mcr.client.call(b"append key 0 0 3\r\nabc\r\n") == b"STORED\r\n"
    assert mcr.client.call(b"prepend key 0 0 3\r\n123\r\n") == b"STORED\r\n"
    assert [get_on(server, "key") for server in servers] == ["123valueabc"] * 3
    assert mcr.get("key") == "123valueabc"

    assert set_on(servers[0], "key2", "value")
    assert mcr.client.call(b"append key2 0 0 3\r\nxyz\r\n") == b"NOT_STORED\r\n"
    assert [get_on(server, "key2") for server in servers] == ["valuexyz", None, None]
    assert mcr.get("key2") is None
    assert set_on(servers[0], "key3", "value")
    assert mcr.client.call(b"prepend key3 0 0 3\r\nxyz\r\n") == b"NOT_STORED\r\n"
    assert [get_on(server, "key3") for server in servers] == ["xyzvalue", None, None]
    assert mcr.get("key3") is None


def test_basic_all_sync_touch(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllSyncAppendPrependTouch.test_touch_all_sync
    (over ASCII)"""
    servers = three_servers(memcached_factory)
    mcr = start_mcrouter("test_basic_all_sync", servers)
    assert mcr.set("key", "value")
    assert mcr.client.call(b"touch key 3600\r\n") == b"TOUCHED\r\n"
    assert [get_on(server, "key") for server in servers] == ["value"] * 3
    assert mcr.get("key") == "value"
    assert set_on(servers[0], "key2", "value")
    assert mcr.get("key2") is None
    assert mcr.set("key3", "value")
    with mc(servers[0]) as direct:
        assert direct.client.call(b"touch key3 -10\r\n") == b"TOUCHED\r\n"
    assert [get_on(server, "key3") for server in servers] == [None, "value", "value"]
    assert mcr.get("key3") is None


def test_basic_all_sync_gat(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllSyncAppendPrependTouch.test_gat_all_sync"""
    servers = three_servers(memcached_factory)
    mcr = start_mcrouter("test_basic_all_sync", servers)
    mcr.set("key", "value")
    for server in servers:
        with mc(server) as direct:
            assert direct.gat(0, "key") == "value"
    assert mcr.gat(-10, "key") == "value"
    assert not mcr.gat(0, "key")
    assert not mcr.gats(0, "key")


def test_basic_all_first(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllFirst.test_basic_all_first"""
    servers = three_servers(memcached_factory)
    mcr = start_mcrouter("test_basic_all_first", servers)
    servers[0].stop()
    assert mcr.set("key", "value")
    assert mcr.get("key") == "value"
    assert mcr.gat(0, "key") == "value"
    assert mcr.gats(0, "key")


def test_basic_all_majority(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicAllMajority.test_basic_all_majority (its sleeps
    replaced by waiting for the deletes to land)"""
    servers = three_servers(memcached_factory, 4)
    mcr = start_mcrouter("test_basic_all_majority", servers)

    def holding(*chosen: Memcached) -> None:
        assert poll(lambda: all(get_on(server, "key") is None for server in servers))
        for server in chosen:
            assert set_on(server, "key", "value")

    holding(*servers)
    assert mcr.get("key") == "value"
    assert mcr.delete("key")
    holding(*servers[:3])
    assert mcr.delete("key")
    holding(servers[0])
    assert not mcr.delete("key")
    holding(*servers[:2])
    assert not mcr.delete("key")  # a tie: NOT_FOUND is the worse reply


def test_basic_failover(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicFailover.test_failover"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_basic_failover", [mc1, mc2])
    assert set_on(mc1, "key", "value")
    assert mcr.get("key") == "value"
    mc1.stop()
    assert mcr.get("key") is None
    assert mcr.get("key") is None
    assert set_on(mc2, "key", "value")
    assert mcr.get("key") == "value"
    assert mcr.get("key") == "value"


def test_basic_failover_negative_exptime(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicFailover.test_failover_negative_exptime"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_basic_failover", [mc1, mc2])
    assert mcr.set("key", "value", exptime=0)
    assert mcr.get("key") == "value"
    assert mcr.set("key", "value", exptime=-10)
    assert mcr.get("key") is None
    mc1.stop()
    assert mcr.get("key") is None
    assert mcr.get("key") is None
    assert set_on(mc2, "key", "value")
    assert mcr.get("key") == "value"
    assert mcr.set("key", "value", exptime=-10)
    assert mcr.get("key") is None


def test_basic_failover_override(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicFailoverOverride.test_failover_override"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_basic_failover_override", [mc1, mc2])
    mc1.stop()
    assert mcr.set("key1", "value1") is None
    assert mcr.get("key1") is None
    assert mcr.get("key1") is None
    assert set_on(mc2, "key2", "value2")
    assert mcr.get("key2") == "value2"
    assert mcr.get("key2") == "value2"


def test_basic_failover_least_failures(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestBasicFailoverLeastFailures.test_failover_least_failures"""
    servers = three_servers(memcached_factory, 4)
    mcr = start_mcrouter("test_basic_failover_least_failures", servers)
    assert set_on(servers[3], "key", "value")
    for server in servers[:3]:
        server.stop()
    reply = mcr.get("key")
    assert isinstance(reply, str) and reply.startswith("SERVER_ERROR"), reply
    assert mcr.get("key") == "value"


def test_basic_l1_l2_get_without_leases(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasicL1L2.test_l1_l2_get, test_l1_l2_get_l1_down,
    test_l1_l2_get_l2_down: the gets of L1L2CacheRoute and the upgrade of an L2 hit."""
    l1, l2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_basic_l1_l2", [l1, l2])
    assert not mcr.get("key1")
    assert set_on(l1, "key1", "value1")
    assert mcr.get("key1") == "value1"
    assert mcr.gat(0, "key1") == "value1"
    assert mcr.gats(0, "key1")
    assert set_on(l2, "key2", "value2")
    assert get_on(l1, "key2") is None
    assert mcr.get("key2") == "value2"
    assert mcr.gat(0, "key2") == "value2"
    assert mcr.gats(0, "key2")
    assert poll(lambda: mcr.get("key2") == "value2" and get_on(l1, "key2") == "value2")

    assert set_on(l2, "key1", "value1")
    l2.stop()
    assert mcr.get("key1") == "value1"
    l1.stop()
    for reply in (mcr.get("key1"), mcr.gat(0, "key1"), mcr.gats(0, "key1")):
        assert isinstance(reply, str) and "SERVER_ERROR" in reply, reply


# -- smaller test files --------------------------------------------------------------


def test_flush_all_disabled(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_flush_all.py test_flush_all_disabled"""
    servers = three_servers(memcached_factory, 2)
    mcr = start_mcrouter(
        "mcrouter_test_basic_2_1_1", servers, "--server-timeout", "2000", route="/a/a/"
    )
    assert mcr.flush_all() == "SERVER_ERROR Command disabled"


def test_flush_all(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_flush_all.py test_flush_all (the delayed flush's duration not checked)"""
    servers = three_servers(memcached_factory, 2)
    mcr = start_mcrouter(
        "mcrouter_test_basic_2_1_1", servers, "--server-timeout", "2000",
        "--enable-flush-cmd", route="/a/a/",
    )  # fmt: skip
    assert mcr.set("key", "value")
    assert mcr.get("key") == "value"
    assert mcr.set("/b/b/key", "value2")
    assert mcr.get("/b/b/key") == "value2"
    assert mcr.flush_all() == "OK"
    assert mcr.get("key") is None
    assert mcr.get("/b/b/key") is None
    assert mcr.set("key2", "value2")
    assert mcr.get("key2") == "value2"
    assert mcr.flush_all(1) == "OK"
    assert poll(lambda: mcr.get("key2") is None)


def test_largeobj(start_mcrouter: Callable[..., McClient]) -> None:
    """test_largeobj.py, as this proxy answers it: a 2 MiB + 1 value is refused by the
    proxy itself with memcached's reply, and its server is never reached. mcrouter has
    no limit of its own (its test's mock server stores the value); here
    `--max-value-size` stands for the servers' `-I` (1 MiB, memcached's default), so
    that the proxy's answers to bad and oversized data blocks are memcached's."""
    mcr = start_mcrouter("test_largeobj")
    value = b"x" * (1024 * 1024 * 2 + 1)
    mcr.client.send(b"set test_largeobj 0 0 %d\r\n%s\r\n" % (len(value), value))
    assert mcr.line() == "SERVER_ERROR object too large for cache\r\n"
    assert mcr.get("test_largeobj") is not None  # its server is down: an error, no miss


def test_empty_pool(start_mcrouter: Callable[..., McClient]) -> None:
    """test_empty_pool.py (over ASCII): every route over an empty pool answers an error
    naming `HashRoute with empty children`... or the AllSync of them does."""
    mcr = start_mcrouter("test_empty_pool")
    reply = mcr.get("foo")
    assert isinstance(reply, str) and reply.startswith("SERVER_ERROR"), reply


def test_miss_on_error_arith_ops(start_mcrouter: Callable[..., McClient]) -> None:
    """test_miss_on_error_arith_ops.py TestMissOnErrorArithOps.test_behaviour: the
    server is down; set, incr and decr get errors."""
    mcr = start_mcrouter("test_miss_on_error_arith_ops")
    key = "foo:test:key:1234"
    assert mcr.set(key, 2) is None
    for command in ("incr", "decr"):
        reply = mcr.arith(command, key, 2)
        assert isinstance(reply, str) and "SERVER_ERROR" in reply, reply


@pytest.mark.parametrize("name", ["test_named_handles_list", "test_named_handles_obj"])
def test_named_handles(
    name: str, memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_named_handles.py test_named_handles_list / test_named_handles_obj"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter(name, [mc1, mc2])
    assert mcr.set("test", "value") is False  # the NullRoute child's NOT_STORED wins
    assert get_on(mc1, "test") == "value"
    assert get_on(mc2, "test") == "value"


@pytest.fixture
def all_hosts(memcached_factory: MemcachedFactory) -> list[Memcached]:
    """test_send_to_all_hosts.py's three servers, each holding its name under `ccw`."""
    servers = three_servers(memcached_factory)
    for server, name in zip(servers, ("cacheA", "cacheB1", "cacheB2"), strict=True):
        assert set_on(server, "ccw", name)
    return servers


def test_send_to_all_hosts_regular_request(
    all_hosts: list[Memcached], start_mcrouter: Callable[..., McClient]
) -> None:
    """test_send_to_all_hosts.py test_regular_request (over ASCII)"""
    mcr = start_mcrouter("test_send_to_all_hosts", all_hosts)
    assert mcr.set("test", "val")
    assert [get_on(server, "test") for server in all_hosts] == ["val", None, None]


def test_send_to_all_hosts_set_and_delete(
    all_hosts: list[Memcached], start_mcrouter: Callable[..., McClient]
) -> None:
    """test_send_to_all_hosts.py test_set and test_delete (over ASCII)"""
    mcr = start_mcrouter("test_send_to_all_hosts", all_hosts)
    assert mcr.set("aaa", "val")
    assert [get_on(server, "aaa") for server in all_hosts] == ["val"] * 3
    assert mcr.delete("aaa")
    assert [get_on(server, "aaa") for server in all_hosts] == [None] * 3


def test_service_info(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_service_info.py test_route_format, test_hostid, test_route_handles"""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_service_info", [mc1, mc2])
    route = mcr.get("__mcrouter__.route(set,abc,def)")
    assert isinstance(route, str)
    assert route.split("\r\n") == [f"127.0.0.1:{mc1.port}", f"127.0.0.1:{mc2.port}"]
    hostid = mcr.get("__mcrouter__.hostid")
    assert isinstance(hostid, str) and str(int(hostid)) == hostid
    assert mcr.get("__mcrouter__.hostid") == hostid
    for op in ("get", "set", "delete"):
        handles = mcr.get(f"__mcrouter__.route_handles({op},abc,def)")
        assert isinstance(handles, str)
        assert "root" in handles and "127.0.0.1" in handles
        assert str(mc1.port) in handles and str(mc2.port) in handles


def test_modify_key(memcached: Memcached, start_mcrouter: Callable[..., McClient]) -> None:
    """test_modify_key.py test_modify_key (over ASCII)"""
    mcr = start_mcrouter("test_modify_key", [memcached], route="/a/a/")
    stored_as = [
        ("key", "/a/b/foo:key"), ("foo:bar", "/a/b/foo:bar"), ("/a/a/foo:bar", "/a/b/foo:bar"),
        ("/a/a/o:", "/a/b/foo:o:"), ("/b/c/key", "/b/c/foo:key"), ("/c/d/123", "123"),
        ("/d/e/123", "123"), ("/e/f/akey", "/e/f/bar:"), ("/e/f/mykeys", "/e/f/bar:ys"),
        ("/e/f/key", "/e/f/bar:key"), ("/e/f/bar:key", "/e/f/bar:key"),
        ("/f/g/akey", "/f/g/bar:akey"), ("/g/h/akey", "/a/b/bar:"),
        ("/g/h/mykeys", "/a/b/bar:ys"), ("/g/h/key", "/a/b/bar:key"),
        ("/h/i/mykeys", "bar:ys"), ("/h/i/hi", "bar:hi"), ("/h/i/keys", "bar:"),
        ("/i/j/keys", "keys"), ("/j/k/foo.sup", "/j/k/bar.sup"),
        ("/d/w/foo.sup", "/d/w/foo.sup:bar"), ("/e/w/akey", "/e/w/bar:foo"),
        ("/e/w/mykeys", "/e/w/bar:ysfoo"), ("/f/w/akey", "bar:foo"),
        ("/j/k/baz.sup", "/j/k/bar.baz.sup"), ("/j/l/baz.sup", "/j/l/bar.baz.supmoot"),
    ]  # fmt: skip
    for index, (key, server_key) in enumerate(stored_as):
        value = f"value{index}"
        assert mcr.set(key, value), key
        assert get_on(memcached, server_key) == value, (key, server_key)
    assert get_on(memcached, "key") is None
    # A broadcast reaches every cluster, each with its own modification.
    assert mcr.set("/*/*/foo:bar", "value3")

    def broadcast_landed() -> bool:
        keys = ("/a/b/foo:bar", "/*/*/foo:bar", "foo:bar")
        return [get_on(memcached, key) for key in keys] == ["value3"] * 3

    assert poll(broadcast_landed)
    # Keys left empty once modified are refused.
    for key in ("/c/d/", "/d/e/", "/i/j/"):
        mcr.client.send(f"set {key} 0 0 5\r\nvalue\r\n".encode())
        assert mcr.line().startswith("SERVER_ERROR"), key


def test_warmup(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_warmup.py test_sanity and test_expiration: a hit in the warm pool is copied
    to the cold one with the config's exptime (20000 s)."""
    warm, cold = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_warmup", [warm, cold])
    assert set_on(warm, "foo", "value")
    min_exptime = int(time.time() + 20000)
    assert mcr.get("foo") == "value"
    assert poll(lambda: get_on(cold, "foo") == "value")
    with mc(cold) as direct:
        reply = direct.client.call(b"mg foo t\r\n").decode()
    assert reply.startswith("HD t"), reply
    exptime = int(time.time()) + int(reply[4:])
    assert min_exptime - 4 <= exptime <= min_exptime + 4, reply


@pytest.mark.parametrize("route", ["/region1/cluster2/", "/region2/cluster3/"])
def test_logical_routing_policies(
    route: str, memcached: Memcached, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_logical_routing_policies.py test_different_cluster and
    test_different_region_cluster"""
    mcr = start_mcrouter("test_logical_routing_policies", [memcached], route=route)
    assert mcr.set("foo1", "value1")
    assert get_on(memcached, "foo1") == "value1"


def test_custom_failover_no_failover_on_a_down_server(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_custom_failover.py TestCustomFailover.test_failover_no: `failover_errors`
    lists remote_error only, so a down server's error is answered, not failed over."""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_custom_failover", [mc1, mc2])
    mc1.stop()
    assert set_on(mc2, "key", "value1")
    reply = mcr.get("key")
    assert isinstance(reply, str) and "SERVER_ERROR" in reply, reply


def test_dev_null(
    memcached_factory: MemcachedFactory, start_mcrouter: Callable[..., McClient]
) -> None:
    """test_mcrouter.py TestDevNull.test_dev_null, but for its stat"""
    good, wild = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_dev_null", [good, wild])
    mcr.set("good:key", "should_be_set")
    mcr.set("key", "should_be_set_wild")
    mcr.set("null:key", "should_not_be_set")
    assert get_on(good, "good:key") == "should_be_set"
    assert get_on(wild, "null:key") is None
    assert get_on(wild, "key") == "should_be_set_wild"
    assert not mcr.delete("null:key2")
    # mcrouter also counts the two in `dev_null_requests`, a stat this proxy does not
    # keep (docs/routes.md).


# -- how mcrouter's harness starts mcrouter (MCProcess.McrouterBase) -------------------


def harness_listen_socket() -> socket.socket:
    """MCProcess.create_listen_socket: an IPv6 socket put to listen() unbound, so the
    kernel binds it to a free port on every address."""
    sock = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    sock.listen(100)
    return sock


def test_listen_sock_fd_serves_the_inherited_socket(memcached: Memcached, tmp_path: Path) -> None:
    """MCProcess.McrouterBase: the proxy gets `--listen-sock-fd` and no port."""
    config = tmp_path / "config.json"
    config.write_text(mcrouter_config("mcrouter_test_basic_1_1_1", [memcached]))
    listen_sock = harness_listen_socket()
    port = listen_sock.getsockname()[1]
    fd = str(listen_sock.fileno())
    command = [sys.executable, "-m", "mcrouter_trio", "--config", f"file:{config}",
               "-L", str(tmp_path / "log"), "--listen-sock-fd", fd]  # fmt: skip
    process = subprocess.Popen(command, pass_fds=[listen_sock.fileno()], stderr=subprocess.PIPE)
    listen_sock.close()
    try:
        with connect(port) as client:  # backlogged until the proxy accepts
            assert client.call(b"set key 0 0 5\r\nvalue\r\n") == b"STORED\r\n"
            assert client.call(b"get key\r\n", b"END\r\n") == b"VALUE key 0 5\r\nvalue\r\nEND\r\n"
        assert get_on(memcached, "key") == "value"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_listen_sock_fd_that_is_no_socket_is_refused() -> None:
    with open(CONFIGS / "test_nullroute.json") as config:
        fd = config.fileno()
        result = subprocess.run(
            [sys.executable, "-m", "mcrouter_trio", "-f", config.name, "--listen-sock-fd",
             str(fd)],
            pass_fds=[fd], capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"--listen-sock-fd {fd}: not a TCP socket" in result.stderr


def test_tko_reconfigure(proxy_factory: ProxyFactory, tmp_path: Path) -> None:
    """test_tko_reconfigure.py test_tko_reconfigure: a down server is TKO after one
    failure (`--timeouts-until-tko 1`); a config that changes only the pool's
    server_timeout replaces its destination (one per server timeout, as mcrouter's),
    which clears the TKO and logs so."""
    port = free_port()  # nothing listens there
    proxy = proxy_factory(
        mcrouter_config("test_tko_reconfigure1", [port]), "--timeouts-until-tko", "1",
        "-v", "3", "--reconfiguration-delay-ms", "100",
    )  # fmt: skip
    with mc(proxy) as mcr:
        reply = mcr.get("hit")
        assert isinstance(reply, str) and "SERVER_ERROR" in reply
        suspects = mcr.stats("suspect_servers")
        assert list(suspects) == [f"127.0.0.1:{port}"]
        assert suspects[f"127.0.0.1:{port}"].startswith("status:tko num_failures:")
        config_file = next(tmp_path.glob("config-*.json"))
        config_file.write_text(mcrouter_config("test_tko_reconfigure2", [port]))
        assert poll(lambda: mcr.stats("suspect_servers") == {}, seconds=10)
    assert poll(lambda: f"127.0.0.1:{port} was TKO, removed from config" in proxy.log())
