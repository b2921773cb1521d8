"""PoolRoute's `slow_warmup` and `shard_splits` end to end, on mcrouter's own test configs.

Each test replays the mcrouter python test of the same name (`test_slow_warmup.py`,
`test_shard_splits.py`) through a real proxy and real memcached; the configs'
server addresses are replaced by the fixtures' ports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from conftest import Client, Memcached, Proxy, connect, poll, stats_on

from mcrouter_trio.ops._host import local_host_id

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

CONFIGS = Path(__file__).parent / "data" / "mcrouter-configs"


def _config(name: str, addresses: dict[str, Memcached]) -> str:
    text = (CONFIGS / f"{name}.json").read_text()
    for address, server in addresses.items():
        text = text.replace(address, server.address)
    return text


def _get(client: Client, key: bytes) -> bytes | None:
    reply = client.call(b"get " + key + b"\r\n", b"END\r\n")
    if reply == b"END\r\n":
        return None
    return reply.split(b"\r\n")[1]


def _server_stats(server: Memcached) -> dict[str, str]:
    with connect(server.port) as direct:
        return stats_on(direct)


def test_slow_warmup_spares_a_cold_server(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """test_slow_warmup.py: warm, made cold by 100 misses, then a share of the gets."""
    proxy = proxy_factory(_config("test_slow_warmup", {"localhost:11130": memcached}))
    with connect(memcached.port) as direct:
        assert direct.call(b"set abc 0 0 3\r\n123\r\n") == b"STORED\r\n"
    with connect(proxy.port) as client:
        assert [_get(client, b"abc") for _ in range(10)] == [b"123"] * 10
        for _ in range(100):
            assert _get(client, b"ghi") is None
        # Hit rate 10/110: a get reaches memcached with probability ~0.19, else
        # NullRoute answers a miss. mcrouter's test takes 30 gets; taking up to 300
        # makes "no hit" or "no spared get" by chance practically impossible.
        answers: list[bytes | None] = []
        while len(answers) < 300 and not (None in answers and b"123" in answers):
            answers.append(_get(client, b"abc"))
    assert None in answers and b"123" in answers
    # The spared gets never reached memcached: every "abc" it saw was a hit (and
    # once 100 replies were counted, some of the "ghi" gets were spared too).
    stats = _server_stats(memcached)
    assert int(stats["get_hits"]) == 10 + answers.count(b"123")
    assert 0 < int(stats["get_misses"]) < 100


def _three(memcached_factory: MemcachedFactory) -> Sequence[Memcached]:
    return [memcached_factory() for _ in range(3)]


SHARD_SERVERS = ("127.0.0.1:11610", "127.0.0.1:11611", "127.0.0.1:11612")


def _shard_splits_proxy(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> tuple[Proxy, Sequence[Memcached]]:
    servers = _three(memcached_factory)
    config = _config("test_shard_splits", dict(zip(SHARD_SERVERS, servers, strict=True)))
    return proxy_factory(config), servers


def _held_by(servers: Sequence[Memcached], key: bytes) -> list[bytes | None]:
    values = []
    for server in servers:
        with connect(server.port) as direct:
            values.append(_get(direct, key))
    return values


def test_shard_splits_basic(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_shard_splits.py test_shard_splits_basic: shard 1 of policy `a` has 3 copies."""
    proxy, servers = _shard_splits_proxy(memcached_factory, proxy_factory)
    copies = [b"a:1:blah", b"a:1aa:blah", b"a:1ba:blah"]
    with connect(proxy.port) as client:
        for key, value in zip(copies, (b"value", b"value_aa", b"value_ba"), strict=True):
            assert client.call(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)) == (
                b"STORED\r\n"
            )
        # The copy this host reads (and the first set wrote) is host id % 3.
        mine = local_host_id() % 3
        assert _get(client, b"a:1:blah") == (b"value", b"value_aa", b"value_ba")[mine]
        assert _get(client, b"a:1aa:blah") == b"value_aa"
        assert _get(client, b"a:1ba:blah") == b"value_ba"
        assert _get(client, b"a:1ca:blah") is None
    # Each copy is an ordinary key on the server it hashes to (copy 0 was written
    # only if it is this host's copy).
    for index, key in enumerate(copies):
        expected = 1 if index > 0 or mine == 0 else 0
        assert sum(value is not None for value in _held_by(servers, key)) == expected


def test_shard_splits_update(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_shard_splits.py test_shard_splits_update: a delete reaches every copy."""
    proxy, servers = _shard_splits_proxy(memcached_factory, proxy_factory)
    copies = [b"a:1:foo", b"a:1aa:foo", b"a:1ba:foo"]
    with connect(proxy.port) as client:
        for key in copies:
            assert client.call(b"set " + key + b" 0 0 5\r\nvalue\r\n") == b"STORED\r\n"
            assert _get(client, key) == b"value"
        assert client.call(b"delete a:1:foo\r\n") in (b"DELETED\r\n", b"NOT_FOUND\r\n")
        assert poll(lambda: all(_held_by(servers, key) == [None] * 3 for key in copies))
        for key in copies:
            assert _get(client, key) is None
        # No splits for shard 5.
        assert client.call(b"set a:5:bar 0 0 6\r\nvalue2\r\n") == b"STORED\r\n"
        assert _get(client, b"a:5:bar") == b"value2"
        assert client.call(b"delete a:5:bar\r\n") == b"DELETED\r\n"
        assert _get(client, b"a:5:bar") is None
        # Arithmetic on a split shard goes to this host's copy, as the get does.
        assert client.call(b"set a:1:counter 0 0 1\r\n5\r\n") == b"STORED\r\n"
        assert client.call(b"incr a:1:counter 1\r\n") == b"6\r\n"
        assert _get(client, b"a:1:counter") == b"6"
        assert client.call(b"decr a:1:counter 3\r\n") == b"3\r\n"
        assert _get(client, b"a:1:counter") == b"3"
        mine = (b"a:1:counter", b"a:1aa:counter", b"a:1ba:counter")[local_host_id() % 3]
        assert sorted(_held_by(servers, mine), key=lambda value: value is None) == [
            b"3",
            None,
            None,
        ]
        # Arithmetic without splits.
        assert client.call(b"set a:125:counter 0 0 3\r\n125\r\n") == b"STORED\r\n"
        assert client.call(b"incr a:125:counter 1\r\n") == b"126\r\n"
        assert _get(client, b"a:125:counter") == b"126"
        assert _get(client, b"a:125aa:counter") is None
        assert client.call(b"decr a:125:counter 124\r\n") == b"2\r\n"
        # memcached may keep a shrunk number's length, space-padded.
        assert _get(client, b"a:125:counter") in (b"2", b"2  ")
