"""End to end: real memcached servers behind the real `python -m mcrouter_trio` process.

Clients are pymemcache's `Client` (what applications use) and raw sockets (for the
exact bytes the protocol fixes). Every check that a key reached a particular
server is made over a direct connection to that memcached, not through the proxy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest
from conftest import Client, Memcached, Proxy, connect, direct_get, pool_config, stats_on
from pymemcache.client.base import Client as MemcacheClient
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from mcrouter_trio import SERVER_VERSION, __version__

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

MIB = 1024 * 1024


@contextmanager
def pymemcache_client(port: int) -> Iterator[MemcacheClient]:
    client = MemcacheClient(
        ("127.0.0.1", port), connect_timeout=5, timeout=10, default_noreply=False
    )
    try:
        yield client
    finally:
        client.close()


def server_stats(server: Memcached) -> dict[str, str]:
    with connect(server.port) as client:
        return stats_on(client)


def value_block(key: bytes, value: bytes, flags: int = 0) -> bytes:
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(value), value)


def hit(key: bytes, value: bytes, flags: int = 0) -> bytes:
    return value_block(key, value, flags) + b"END\r\n"


def read_exactly(client: Client, size: int) -> bytes:
    out = client.buffer
    client.buffer = b""
    while len(out) < size:
        chunk = client.sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def run_threads(targets: Sequence[Callable[[], None]], timeout: float) -> list[BaseException]:
    """Run each target in its own thread; return the exceptions they raised."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "client threads hung"
    return errors


# -- pymemcache through the proxy ----------------------------------------------------


def test_pymemcache_storage_and_retrieval(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with pymemcache_client(proxy.port) as mc:
        assert mc.set(b"k", b"v1") is True
        assert mc.get(b"k") == b"v1"
        assert mc.get(b"missing") is None

        assert mc.add(b"k", b"other") is False
        assert mc.add(b"added", b"a") is True
        assert mc.replace(b"nope", b"x") is False
        assert mc.replace(b"k", b"v2") is True
        assert mc.append(b"k", b"-tail") is True
        assert mc.prepend(b"k", b"head-") is True
        assert mc.get(b"k") == b"head-v2-tail"

        assert mc.get_many([b"k", b"missing", b"added"]) == {
            b"k": b"head-v2-tail",
            b"added": b"a",
        }

        value, cas = mc.gets(b"k")
        assert value == b"head-v2-tail"
        assert isinstance(cas, bytes) and cas.isdigit()
        assert mc.cas(b"k", b"swapped", cas) is True
        assert mc.cas(b"k", b"stale", cas) is False
        assert mc.cas(b"never-set", b"x", b"1") is None
        assert mc.get(b"k") == b"swapped"

        assert mc.set(b"n", b"10") is True
        assert mc.incr(b"n", 5) == 15
        assert mc.decr(b"n", 20) == 0
        assert mc.incr(b"no-counter", 1) is None
        with pytest.raises(MemcacheClientError, match="non-numeric"):
            mc.incr(b"k", 1)

        assert mc.touch(b"k", 100) is True
        assert mc.touch(b"missing", 100) is False

        assert mc.delete(b"k") is True
        assert mc.delete(b"k") is False
        assert mc.get(b"k") is None

        # noreply requests get no answer but are carried out, in order.
        assert mc.set(b"quiet", b"q", noreply=True) is True
        assert mc.get(b"quiet") == b"q"

    # Everything above really happened in memcached.
    assert direct_get(memcached, b"n") == hit(b"n", b"0 ")  # memcached pads a shrunk decr
    assert direct_get(memcached, b"quiet") == hit(b"quiet", b"q")
    assert direct_get(memcached, b"k") == b"END\r\n"


def test_binary_values_and_crlf_inside(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    every_byte = bytes(range(256)) * 4
    tricky = b"\r\nEND\r\nVALUE x 0 1\r\nSTORED\r\n\r\n\x00"
    with pymemcache_client(proxy.port) as mc:
        assert mc.set(b"bin", every_byte, flags=7) is True
        assert mc.set(b"tricky", tricky) is True
        assert mc.set(b"empty", b"") is True
        assert mc.get(b"bin") == every_byte
        assert mc.get_many([b"tricky", b"empty", b"bin"]) == {
            b"tricky": tricky,
            b"empty": b"",
            b"bin": every_byte,
        }
    expected = value_block(b"tricky", tricky) + value_block(b"empty", b"") + b"END\r\n"
    with connect(proxy.port) as client:
        client.send(b"get tricky empty\r\n")
        assert read_exactly(client, len(expected)) + client.read_for(0.05) == expected
    assert direct_get(memcached, b"bin") == hit(b"bin", every_byte, flags=7)


def test_one_mib_value_accepted_one_more_byte_rejected(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    server = memcached_factory("-I", "2m")  # memcached itself must accept 1 MiB
    proxy = proxy_factory(pool_config(server.address))
    big = bytes(range(256)) * (MIB // 256)
    assert len(big) == MIB
    with pymemcache_client(proxy.port) as mc:
        assert mc.set(b"big", big) is True
        assert mc.get(b"big") == big
        with pytest.raises(MemcacheServerError, match="object too large for cache"):
            mc.set(b"too-big", big + b"x")
        assert mc.get(b"big") == big  # the same session carries on

    with connect(proxy.port) as client:
        assert client.call(b"set victim 0 0 1\r\nv\r\n") == b"STORED\r\n"
        # The rejected value is swallowed, never parsed as commands, and a failed
        # `set` drops the old value (memcached does the same).
        poison = (b"delete big\r\n" * (MIB // 12 + 1))[: MIB + 1]
        client.send(b"set victim 0 0 %d\r\n%s\r\nget big victim\r\n" % (len(poison), poison))
        assert client.read_until(b"\r\n") == b"SERVER_ERROR object too large for cache\r\n"
        assert client.read_until(b"END\r\n") == hit(b"big", big)
        assert client.call(b"version\r\n").startswith(b"VERSION ")
    assert direct_get(server, b"victim") == b"END\r\n"
    assert direct_get(server, b"big") == hit(b"big", big)


# -- multi-get across a pool ---------------------------------------------------------


def owners(servers: list[Memcached], keys: list[bytes]) -> dict[bytes, int]:
    """The index of the server that holds each stored key (read from the servers)."""
    owner: dict[bytes, int] = {}
    for index, server in enumerate(servers):
        for key in keys:
            if direct_get(server, key) != b"END\r\n":
                assert key not in owner, f"{key!r} stored on two servers"
                owner[key] = index
    return owner


def test_multiget_across_three_servers_in_client_order(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    proxy = proxy_factory(pool_config(*(s.address for s in servers)))
    keys = [b"key%d" % i for i in range(30)]
    with connect(proxy.port) as client:
        for key in keys:
            assert client.call(b"set %s 3 0 %d\r\nv-%s\r\n" % (key, len(key) + 2, key)) == (
                b"STORED\r\n"
            )

    owner = owners(servers, keys)
    assert sorted(owner) == sorted(keys), "every key is on exactly one server"
    assert set(owner.values()) == {0, 1, 2}, f"keys did not spread: {owner}"

    # One key from each server, in an order that differs from server order, plus
    # a duplicate and a miss in the middle.
    first_of = {index: next(k for k in keys if owner[k] == index) for index in range(3)}
    order = [first_of[2], first_of[0], b"absent", first_of[1], first_of[2]]
    expected = b"".join(value_block(k, b"v-" + k, 3) for k in order if k != b"absent")
    with connect(proxy.port) as client:
        assert client.call(b"get " + b" ".join(order) + b"\r\n", b"END\r\n") == (
            expected + b"END\r\n"
        )
        assert client.call(b"get absent nothing\r\n") == b"END\r\n"
        gets = client.call(b"gets " + b" ".join(order) + b"\r\n", b"END\r\n")
    headers = [line for line in gets.split(b"\r\n") if line.startswith(b"VALUE ")]
    assert [h.split(b" ")[1] for h in headers] == [k for k in order if k != b"absent"]
    assert all(re.fullmatch(rb"VALUE \S+ 3 \d+ \d+", h) for h in headers), headers

    with pymemcache_client(proxy.port) as mc:
        assert mc.get_many(keys) == {k: b"v-" + k for k in keys}


def test_multiget_whose_keys_share_a_server_is_answered_exactly(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    # Every key on one server: the get goes to it whole (no split and merge), which
    # must answer exactly as the split path does, duplicates and misses included.
    servers = [memcached_factory() for _ in range(3)]
    proxy = proxy_factory(pool_config(*(s.address for s in servers)))
    keys = [b"whole%d" % i for i in range(40)]
    with connect(proxy.port) as client:
        for key in keys[::2]:  # odd keys stay missing
            assert client.call(b"set %s 5 0 %d\r\n%s\r\n" % (key, len(key), key)) == b"STORED\r\n"
        before = _requests_per_server(client)
    owner = owners(servers, keys[::2])
    target = owner[keys[0]]
    hits = [k for k in keys[::2] if owner[k] == target][:4]
    # A miss that hashes to the same server: set it there, read its owner, delete it.
    with connect(proxy.port) as client:
        misses = []
        for key in keys[1::2]:
            client.call(b"set %s 0 0 1\r\nx\r\n" % key)
            if direct_get(servers[target], key) != b"END\r\n":
                misses.append(key)
            client.call(b"delete %s\r\n" % key)
        assert misses, "no missing key hashes to the target server"
        order = [hits[0], misses[0], *hits[1:], hits[0]]
        expected = b"".join(value_block(k, k, 5) for k in order if k in hits) + b"END\r\n"
        assert client.call(b"get " + b" ".join(order) + b"\r\n", b"END\r\n") == expected
        after = _requests_per_server(client)
    sent = sum(after.values()) - sum(before.values())
    assert sent == 2 * len(keys[1::2]) + 1  # the sets, deletes, one get


def test_multiget_through_a_route_tree_answers_as_memcached_does(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    # Not a PoolRoute at the root: every key is routed on its own, and when all of
    # them reach one server untouched, the client's get goes to it as it is.
    config = pool_config(memcached.address)
    config["route"] = {"type": "HashRoute", "children": "Pool|A"}
    proxy = proxy_factory(config)
    with connect(proxy.port) as client:
        for key in (b"ta", b"tb"):
            assert client.call(b"set %s 9 0 2\r\nhi\r\n" % key) == b"STORED\r\n"
        for command in (b"get ta tx tb ta\r\n", b"gets tb ta tb\r\n", b"get tx ty\r\n"):
            with connect(memcached.port) as direct:
                expected = direct.call(command, b"END\r\n")
            assert client.call(command, b"END\r\n") == expected


# -- pipelining ----------------------------------------------------------------------


def pipeline_for(client_id: int, count: int) -> tuple[bytes, bytes]:
    """`count` mixed requests for one client and the exact replies expected."""
    requests: list[bytes] = []
    replies: list[bytes] = []
    for j in range(count):
        block = j - j % 10
        key = b"c%d-b%d" % (client_id, block)
        counter = b"c%d-n%d" % (client_id, block)
        value = b"client %d\r\nblock %d" % (client_id, block)
        step = j % 10
        if step == 0:
            requests.append(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
            replies.append(b"STORED\r\n")
        elif step == 1:
            requests.append(b"get %s\r\n" % key)
            replies.append(hit(key, value))
        elif step == 2:
            requests.append(b"add %s 0 0 1\r\nx\r\n" % key)
            replies.append(b"NOT_STORED\r\n")
        elif step == 3:
            requests.append(b"append %s 0 0 %d\r\n+%d\r\n" % (key, len(b"+%d" % j), j))
            replies.append(b"STORED\r\n")
        elif step == 4:
            requests.append(b"get %s missing-%d %s\r\n" % (key, client_id, key))
            appended = value + b"+%d" % (j - 1)
            replies.append(value_block(key, appended) * 2 + b"END\r\n")
        elif step == 5:
            requests.append(b"delete %s\r\n" % key)
            replies.append(b"DELETED\r\n")
        elif step == 6:
            requests.append(b"get %s\r\n" % key)
            replies.append(b"END\r\n")
        elif step == 7:
            requests.append(b"set %s 0 0 2 noreply\r\n%d\r\n" % (counter, 10 + client_id % 90))
        elif step == 8:
            requests.append(b"incr %s 3\r\n" % counter)
            replies.append(b"%d\r\n" % (13 + client_id % 90))
        else:
            requests.append(b"decr %s 1000\r\n" % counter)
            replies.append(b"0\r\n")
    return b"".join(requests), b"".join(replies)


def test_fifty_pipelining_clients_get_their_own_replies_in_order(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    proxy = proxy_factory(pool_config(*(s.address for s in servers)))
    clients = 50
    barrier = threading.Barrier(clients, timeout=10)
    results: dict[int, tuple[bytes, bytes]] = {}

    def one_client(client_id: int) -> Callable[[], None]:
        payload, expected = pipeline_for(client_id, 200)

        def run() -> None:
            with connect(proxy.port) as client:
                client.sock.settimeout(20)
                barrier.wait()
                client.send(payload)  # all 200 requests in one send
                got = read_exactly(client, len(expected))
                got += client.read_for(0.05)  # nothing more may follow
                results[client_id] = (got, expected)

        return run

    errors = run_threads([one_client(i) for i in range(clients)], timeout=30)
    assert not errors, errors[:3]
    assert sorted(results) == list(range(clients))
    for client_id, (got, expected) in results.items():
        assert got == expected, f"client {client_id} got the wrong replies"
    # The proxy used every server (the pipelines really were split and merged).
    assert all(int(server_stats(s)["cmd_set"]) > 0 for s in servers)


# -- commands the proxy handles itself -----------------------------------------------


def test_quit_closes_after_earlier_replies(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        client.send(b"set q 0 0 1\r\nx\r\nget q\r\nquit\r\nget q\r\n")
        assert client.read_for(3) == b"STORED\r\n" + hit(b"q", b"x") + b"<CLOSED>"


def test_flush_all_disabled_by_default(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(b"set f 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert client.call(b"flush_all\r\n") == b"SERVER_ERROR Command disabled\r\n"
        assert client.call(b"get f\r\n", b"END\r\n") == hit(b"f", b"1")
    assert server_stats(memcached)["cmd_flush"] == "0"
    assert direct_get(memcached, b"f") == hit(b"f", b"1")


def test_flush_all_enabled_reaches_every_server(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    proxy = proxy_factory(pool_config(*(s.address for s in servers)), "--enable-flush-cmd")
    for server in servers:
        with connect(server.port) as client:
            assert client.call(b"set f 0 0 1\r\n1\r\n") == b"STORED\r\n"
    with connect(proxy.port) as client:
        assert client.call(b"flush_all\r\n") == b"OK\r\n"
    for server in servers:
        assert direct_get(server, b"f") == b"END\r\n"
        assert server_stats(server)["cmd_flush"] == "1"


def test_stats_answered_by_the_proxy(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        raw = client.call(b"stats\r\n", b"END\r\n")
    lines = raw.split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    assert all(re.fullmatch(rb"STAT \S+ .*", line) for line in lines[:-2]), raw
    assert b"STAT pid %d\r\n" % proxy.process.pid in raw  # not memcached's pid
    assert f"STAT version {SERVER_VERSION}\r\n".encode() in raw


def test_version_answered_by_the_proxy(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        reply = client.call(b"version\r\n")
        with connect(memcached.port) as direct:
            memcached_version = direct.call(b"version\r\n")
    # The memcached generation first (clients parse it), then the proxy's own version.
    assert re.fullmatch(
        rb"VERSION 1\.6\.\d+\+mcrouter-trio-%s\r\n" % re.escape(__version__.encode()), reply
    )
    assert reply != memcached_version


def _requests_per_server(client: Client) -> dict[str, int]:
    raw = client.call(b"stats servers\r\n", b"END\r\n")
    counts: dict[str, int] = {}
    for line in raw.split(b"\r\n"):
        match = re.match(rb"STAT (\S+) .*requests:(\d+)", line)
        if match:
            counts[match[1].decode()] = int(match[2])
    return counts


def test_multiget_sends_one_get_per_server(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    proxy = proxy_factory(pool_config(*(s.address for s in servers)))
    keys = [b"batch%d" % i for i in range(30)]
    with connect(proxy.port) as client:
        for key in keys[::2]:  # every other key is a miss
            assert client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(key), key)) == b"STORED\r\n"
        before = _requests_per_server(client)
        routed = b"get " + b" ".join(b"/././" + key for key in keys) + b"\r\n"
        expected = b"".join(value_block(b"/././" + k, k) for k in keys[::2]) + b"END\r\n"
        assert client.call(routed, b"END\r\n") == expected
        after = _requests_per_server(client)
    assert len(after) == 3
    assert {server: after[server] - before[server] for server in after} == dict.fromkeys(after, 1)
