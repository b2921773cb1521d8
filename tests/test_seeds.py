"""The three deployments of the seed article, with its configs verbatim.

The configs keep the article's `//` comments and trailing commas (mcrouter's JSON
dialect); only the server addresses are replaced by the fixtures' ports. Where
the article inspects memcached (its `getkey.sh` and `stats` tables), the tests
connect to each memcached directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial

from conftest import Memcached, Proxy, connect, direct_get, poll

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

# Section 4.2.2: a replicated pool (the article lists one host and a comment
# inviting more; the test lists three, keeping the comment and trailing comma).
REPLICATED_CONFIG = """\
{
  "pools": {
    "A": {
      "servers": [
        // hosts of replicated pool, e.g.:
        "{A0}",
        "{A1}",
        "{A2}",
      ]
    }
  },
  "route": {
    "type": "PrefixPolicyRoute",
    "operation_policies": {
      "delete": "AllSyncRoute|Pool|A",
      "add": "AllSyncRoute|Pool|A",
      "get": "LatestRoute|Pool|A",
      "set": "AllSyncRoute|Pool|A"
    }
  }
}
"""

# Section 5.3.2: plain distribution over two pools of three.
RANDOM_CONFIG = """\
{
  "pools": {
    "backup": { "servers": [
      "{B0}",
      "{B1}",
      "{B2}",
    ] },
    "localhost": { "servers": [
      "{L0}",
      "{L1}",
      "{L2}",
    ] }
  },
  "route": {
    "type": "RandomRoute",
    "children" : [ "PoolRoute|localhost", "PoolRoute|backup" ]
  }
}
"""

# Section 5.4.2: replicated pools, with reads warming a restarted "localhost" pool.
WARMUP_CONFIG = """\
{
  "pools": {
    "backup": { "servers": [
      "{B0}",
      "{B1}",
      "{B2}",
    ] },
    "localhost": { "servers": [
      "{L0}",
      "{L1}",
      "{L2}",
    ] }
  },
  "route": {
    "type": "OperationSelectorRoute",
    "operation_policies": {
      "get": {
        "type": "WarmUpRoute",
        "cold": "PoolRoute|localhost",
        "warm": "PoolRoute|backup",
        "exptime": 0
      }
    },
    "default_policy": {
      "type": "AllSyncRoute",
      "children": [
        "PoolRoute|localhost",
        "PoolRoute|backup"
      ]
    }
  }
}
"""


def render(template: str, **servers: Memcached) -> str:
    text = template
    for name, server in servers.items():
        text = text.replace("{" + name + "}", server.address)
    assert not re.search(r"\{[A-Z]\d\}", text), text
    return text


def direct_gets(server: Memcached, key: bytes) -> bytes:
    with connect(server.port) as client:
        return client.call(b"gets " + key + b"\r\n", b"END\r\n")


def stat(server: Memcached, name: str) -> int:
    with connect(server.port) as client:
        raw = client.call(b"stats\r\n", b"END\r\n")
    found = re.search(rb"STAT " + name.encode() + rb" (\d+)\r\n", raw)
    assert found is not None, raw
    return int(found.group(1))


def holders(servers: Sequence[Memcached], key: bytes) -> list[int]:
    """Indexes of the servers that hold `key`."""
    return [i for i, server in enumerate(servers) if direct_get(server, key) != b"END\r\n"]


def set_many(port: int, keys: Sequence[bytes], value: bytes, batch: int = 500) -> None:
    """`set key 0 0 len` for every key through the proxy, pipelined, all STORED."""
    with connect(port) as client:
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            client.send(
                b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value) for k in chunk)
            )
            for key in chunk:
                assert client.read_until(b"\r\n") == b"STORED\r\n", key


def refilled(servers: Sequence[Memcached], key: bytes, index: int) -> bool:
    return holders(servers, key) == [index]


# -- 4.2.2 replicated pool -----------------------------------------------------------


def test_replicated_pool_writes_everywhere_reads_from_latest(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    config = render(REPLICATED_CONFIG, A0=servers[0], A1=servers[1], A2=servers[2])
    proxy = proxy_factory(config)

    with connect(proxy.port) as client:
        # The article's telnet session.
        assert client.call(b"set testkey1 0 0 3\r\nliu\r\n") == b"STORED\r\n"
        assert client.call(b"set testkey2 0 0 4\r\nyong\r\n") == b"STORED\r\n"
        assert client.call(b"set testkey3 0 0 5\r\n43999\r\n") == b"STORED\r\n"
    expected = {
        b"testkey1": b"VALUE testkey1 0 3\r\nliu\r\nEND\r\n",
        b"testkey2": b"VALUE testkey2 0 4\r\nyong\r\nEND\r\n",
        b"testkey3": b"VALUE testkey3 0 5\r\n43999\r\nEND\r\n",
    }
    for server in servers:
        for key, reply in expected.items():
            assert direct_get(server, key) == reply, (server.address, key)

    gets_before = [stat(server, "cmd_get") for server in servers]
    with connect(proxy.port) as client:
        for _ in range(10):
            for key, reply in expected.items():
                assert client.call(b"get " + key + b"\r\n", b"END\r\n") == reply
    # LatestRoute: every get from this proxy host goes to one and the same server.
    gets = [stat(s, "cmd_get") - before for s, before in zip(servers, gets_before, strict=True)]
    assert sorted(gets) == [0, 0, 30], f"gets spread over servers: {gets}"
    served = gets.index(30)

    with connect(proxy.port) as client:
        # add and delete are replicated too.
        assert client.call(b"add fresh 0 0 2\r\nok\r\n") == b"STORED\r\n"
        assert client.call(b"add fresh 0 0 2\r\nno\r\n") == b"NOT_STORED\r\n"
        assert client.call(b"delete testkey3\r\n") == b"DELETED\r\n"
        # An operation with no policy and no default gets mcrouter's empty reply.
        assert client.call(b"append testkey1 0 0 1\r\nx\r\n") == (
            b"SERVER_ERROR unexpected result mc_res_unknown (0) for append\r\n"
        )
    for server in servers:
        assert direct_get(server, b"fresh") == b"VALUE fresh 0 2\r\nok\r\nEND\r\n"
        assert direct_get(server, b"testkey3") == b"END\r\n"
        assert direct_get(server, b"testkey1") == expected[b"testkey1"]

    # LatestRoute fails over to another replica when its server goes away.
    servers[served].stop()
    with connect(proxy.port) as client:
        for key in (b"testkey1", b"testkey2"):
            assert client.call(b"get " + key + b"\r\n", b"END\r\n") == expected[key]


# -- 5.3 RandomRoute over two pools ---------------------------------------------------


def test_random_route_spreads_sets_evenly(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    backup = [memcached_factory() for _ in range(3)]
    local = [memcached_factory() for _ in range(3)]
    config = render(
        RANDOM_CONFIG,
        B0=backup[0], B1=backup[1], B2=backup[2], L0=local[0], L1=local[1], L2=local[2],
    )  # fmt: skip
    proxy = proxy_factory(config)
    total = 10_000
    set_many(proxy.port, [b"key%d" % i for i in range(1, total + 1)], b"test")

    servers = [*local, *backup]
    sets = [stat(server, "cmd_set") for server in servers]
    items = [stat(server, "curr_items") for server in servers]
    assert sum(sets) == total, sets
    assert sum(items) == total, items  # every key stored exactly once
    share = total / len(servers)
    for server, count in zip(servers, sets, strict=True):
        assert abs(count - share) <= 0.15 * share, (server.address, sets)


# -- 5.4 warm-up of a restarted pool ---------------------------------------------------


def test_warmup_refills_restarted_pool_from_backup(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    backup = [memcached_factory() for _ in range(3)]
    local = [memcached_factory() for _ in range(3)]
    config = render(
        WARMUP_CONFIG,
        B0=backup[0], B1=backup[1], B2=backup[2], L0=local[0], L1=local[1], L2=local[2],
    )  # fmt: skip
    proxy = proxy_factory(config)
    keys = [b"key%d" % i for i in range(1, 201)]
    set_many(proxy.port, keys, b"test")
    with connect(proxy.port) as client:
        assert client.call(b"set flagged 42 0 5\r\nflags\r\n") == b"STORED\r\n"

    # Both pools got every write, each key on the same server index in both
    # (the article's 5.4.6 table: 127.0.0.1:11210 mirrors 192.168.75.131:11210).
    for i in range(3):
        assert stat(local[i], "cmd_set") == stat(backup[i], "cmd_set") > 0
    assert sum(stat(s, "curr_items") for s in local) == len(keys) + 1
    for key in (b"key1", b"key2", b"flagged"):
        assert len(holders(local, key)) == 1
        assert holders(local, key) == holders(backup, key)

    # 5.4.7: the localhost pool loses everything.
    for server in local:
        server.restart()
    for key in (b"key1", b"key2", b"key3", b"flagged"):
        assert holders(local, key) == []
    where = {key: holders(backup, key)[0] for key in (b"key1", b"key2", b"key3", b"flagged")}

    with connect(proxy.port) as client:
        assert client.call(b"get key1\r\n", b"END\r\n") == b"VALUE key1 0 4\r\ntest\r\nEND\r\n"
        assert client.call(b"get key2\r\n", b"END\r\n") == b"VALUE key2 0 4\r\ntest\r\nEND\r\n"
        assert client.call(b"get flagged\r\n", b"END\r\n") == (
            b"VALUE flagged 42 5\r\nflags\r\nEND\r\n"
        )
    # The refill (`add` to the cold pool) is asynchronous for `get`.
    for key in (b"key1", b"key2", b"flagged"):
        assert poll(partial(refilled, local, key, where[key])), key
    assert direct_get(local[where[b"flagged"]], b"flagged") == (
        b"VALUE flagged 42 5\r\nflags\r\nEND\r\n"
    )
    # Only the keys that were read came back: the backup pool is not copied wholesale.
    assert holders(local, b"key3") == []

    # A later get is served by the refilled cold server.
    cold = local[where[b"key1"]]
    hits_before = stat(cold, "get_hits")
    with connect(proxy.port) as client:
        assert client.call(b"get key1\r\n", b"END\r\n") == b"VALUE key1 0 4\r\ntest\r\nEND\r\n"
    assert stat(cold, "get_hits") == hits_before + 1

    # The article's config warms `get` only: `gets` falls to the default policy
    # (AllSyncRoute over both pools), whose worst reply is the cold pool's miss.
    with connect(proxy.port) as client:
        assert client.call(b"gets key3\r\n") == b"END\r\n"
    assert holders(local, b"key3") == []
