"""More of mcrouter's python tests (`mcrouter/test/test_*.py`), replayed against this
proxy: routes (failover, shadows, weighted hashing, big values, warm-up, buckets).

As in tests/test_mcrouter_pytests.py: the same config (its ports made the test's
servers'), flags, requests and expected replies, with mcrouter's test client's
return values (`McClient`). mcrouter's mock servers map onto this suite's fault
servers: its `EchoServer` and `CustomErrorServer` answer fixed bytes here too
(`fault_server`), its `MockMemcached` is a real memcached.

Where mcrouter's test waits a fixed time for asynchronous requests (shadows,
warm-up), these poll for the outcome instead. The tests of mcrouter's that need its
lease commands, Thrift/caret servers, runtime variables or Meta-only services are not
replayed; tests/data/mcrouter-configs/README.md says which and why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Conn, FaultServer, Memcached, Proxy, poll
from test_mcrouter_pytests import (
    CONFIGS,
    McClient,
    get_on,
    harness_listen_socket,
    mc,
    mcrouter_config,
    set_on,
    start_mcrouter,
)

__all__ = ["start_mcrouter"]  # a fixture, used by name

MemcachedFactory = Callable[..., Memcached]
FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]
StartMcrouter = Callable[..., McClient]
ProxyFactory = Callable[..., Proxy]


def error_server(message: str) -> Callable[[Conn], None]:
    """mcrouter's CustomErrorServer: one request answered `message`, then closed."""

    def handler(conn: Conn) -> None:
        if conn.readline() is not None:
            conn.send(message.encode() + b"\r\n")

    return handler


@contextmanager
def mc_port(port: int) -> Iterator[McClient]:
    client = McClient(port)
    try:
        yield client
    finally:
        client.close()


def pipelined_gets(mcr: McClient, keys: Sequence[str], batch: int = 500) -> list[object]:
    """`get` of each key, sent `batch` at a time: the replies as McClient.get's."""
    replies: list[object] = []
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        mcr.client.send(b"".join(f"get {key}\r\n".encode() for key in chunk))
        replies.extend(read_get_reply(mcr) for _ in chunk)
    return replies


def read_get_reply(mcr: McClient) -> object:
    """One `get`'s reply, as McClient.get returns it (a hit's value, None, an error)."""
    found: object = None
    while (line := mcr.line().strip()) != "END":
        if line.startswith("VALUE"):
            found = mcr.client.read_exactly(int(line.split()[3]) + 2)[:-2].decode()
        else:
            return line
    return found


# -- test_wch3.py ----------------------------------------------------------------


def test_wch3(fault_server: FaultServerFactory, start_mcrouter: StartMcrouter) -> None:
    """test_wch3.py TestWCH3.test_wch3: eight servers each answering any get with its
    port; WeightedCh3's weights (0 for two, 0.3 to 1 for the others; a longer list
    and a shorter one, its missing weight 0.5, in /test/B/ and /test/C/) decide
    who serves which key, the same for the three routes."""

    def echo_port(conn: Conn) -> None:
        """mcrouter's EchoServer: every get answered `hit` with the server's port."""
        port = str(conn.server.port).encode()
        while (line := conn.readline()) is not None:
            if line.startswith(b"get") and not conn.send(
                b"VALUE hit 0 %d\r\n%s\r\nEND\r\n" % (len(port), port)
            ):
                return

    servers = [fault_server(echo_port) for _ in range(8)]
    ports = [server.port for server in servers]
    mcr = start_mcrouter("test_wch3", ports, route="/test/A/")
    n = 20000
    keys = [f"someprefix:{i}:|#|id=123" for i in range(n)]
    answers = [
        pipelined_gets(mcr, [prefix + key for key in keys])
        for prefix in ("", "/test/B/", "/test/C/")
    ]
    assert answers[1] == answers[0] and answers[2] == answers[0]
    request_counts = Counter(int(str(answer)) for answer in answers[0])
    assert set(request_counts) <= {ports[i] for i in (1, 2, 4, 5, 6, 7)}
    expected_fractions = {0: 0, 1: 1, 2: 1, 3: 0.0, 4: 0.5, 5: 1, 6: 0.3, 7: 0.5}
    total_weight = sum(expected_fractions.values())
    for i, weight in expected_fractions.items():
        measured = request_counts[ports[i]] / n
        if weight:
            assert measured == pytest.approx(weight / total_weight, abs=0.075), i
        else:
            assert measured == 0.0, i


# -- test_custom_failover.py / test_miss_on_error_arith_ops.py -------------------


def test_custom_failover_on_a_remote_error(
    fault_server: FaultServerFactory,
    memcached: Memcached,
    start_mcrouter: StartMcrouter,
) -> None:
    """test_custom_failover.py TestCustomFailover.test_failover: the first server
    answers `SERVER_ERROR`, a remote error, which `failover_errors` lists."""
    failing = fault_server(error_server("SERVER_ERROR"))
    mcr = start_mcrouter("test_custom_failover", [failing.port, memcached])
    assert set_on(memcached, "key", "value1")
    assert mcr.get("key") == "value1"


def test_custom_failover_override(
    fault_server: FaultServerFactory,
    memcached: Memcached,
    start_mcrouter: StartMcrouter,
) -> None:
    """test_custom_failover.py TestCustomFailoverOverride.test_failover_gets and
    test_failover_updates: `failover_errors` per operation kind; updates none."""
    failing = fault_server(error_server("SERVER_ERROR"))
    mcr = start_mcrouter("test_custom_failover_override", [failing.port, memcached])
    assert set_on(memcached, "key", "value1")
    assert mcr.get("key") == "value1"
    assert not mcr.set("key", "value2")
    assert get_on(memcached, "key") == "value1"


@pytest.mark.parametrize(("command", "delta"), [("incr", 1), ("decr", 2)])
def test_disable_miss_on_error_arith_ops(
    command: str, delta: int, fault_server: FaultServerFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_miss_on_error_arith_ops.py TestDisableMissOnErrorArithOps.test_incr_error
    and test_decr_error: the server's CLIENT_ERROR comes back as it was sent."""
    error = "CLIENT_ERROR cannot increment or decrement non-numeric value"
    server = fault_server(error_server(error))
    mcr = start_mcrouter("test_miss_on_error_arith_ops", [server.port])
    reply = mcr.arith(command, "foo:amcrn", delta)
    assert isinstance(reply, str) and reply.rstrip() == error


# -- test_empty_pool.py ------------------------------------------------------------


def test_empty_pool_names_its_hash_route(start_mcrouter: StartMcrouter) -> None:
    """test_empty_pool.py test_empty_pool (over ASCII, where a local error is a
    SERVER_ERROR): the AllSyncRoute answers its first child's error, that of
    `HashRoute|Pool|A-foo` (the routes before it over no children are NullRoutes), a
    HashRoute whose config names it not."""
    mcr = start_mcrouter("test_empty_pool")
    reply = mcr.client.call(b"get foo\r\n")
    assert reply == b"SERVER_ERROR HashRoute with empty children, name: \r\n"


# -- test_shadow*.py ---------------------------------------------------------------


def shadow_landed(
    shadows: Sequence[Memcached], keys: Sequence[tuple[str, str]]
) -> Callable[[], bool]:
    return lambda: all(get_on(shadow, key) == value for shadow in shadows for key, value in keys)


# SpookyHashV2 puts these keys' indexes in the key fraction range 0.0 .. 0.1.
NORMAL_SHADOW_INDEXES = [5, 7, 13, 33, 43, 46, 58, 71, 83, 85, 89, 91, 93]


@pytest.fixture
def shadow_servers(memcached_factory: MemcachedFactory) -> list[Memcached]:
    """test_shadow.py's seven: foo 0 and 1, bar 0 and 1, foo's shadow, foo's shadow
    for specific keys, bar's shadow."""
    return [memcached_factory() for _ in range(7)]


@pytest.mark.parametrize(
    ("prefix", "shadow_indexes", "shadow_names"),
    [
        ("f", NORMAL_SHADOW_INDEXES, ("foo_shadow", "bar_shadow")),
        ("reg_f", [20, 30, 39, 57, 69, 71], ("foo_shadow",)),
    ],
    ids=["test_normal_shadow", "test_regional_shadow"],
)
def test_shadow(
    prefix: str,
    shadow_indexes: list[int],
    shadow_names: tuple[str, ...],
    shadow_servers: list[Memcached],
    start_mcrouter: StartMcrouter,
) -> None:
    """test_shadow.py TestShadow.test_normal_shadow and test_regional_shadow: sets
    whose key falls in the key fraction range are copied to the shadows; the broken
    shadow settings of the config are ignored."""
    foo_0, foo_1, _, _, foo_shadow, _, bar_shadow = shadow_servers
    named = {"foo_shadow": foo_shadow, "bar_shadow": bar_shadow}
    mcr = start_mcrouter("test_shadow", shadow_servers)
    kv = [(f"{prefix}{i}", f"value{i}") for i in range(100)]
    shadow_keys = [kv[i] for i in shadow_indexes]
    for key, value in kv:
        mcr.set(key, value)
    shadows = [named[name] for name in shadow_names]
    assert poll(shadow_landed(shadows, shadow_keys))
    for key, value in kv:
        assert get_on(foo_0, key) == value or get_on(foo_1, key) == value
        for shadow in (foo_shadow, bar_shadow):
            expected = value if (key, value) in shadow_keys and shadow in shadows else None
            assert get_on(shadow, key) == expected, (key, shadow.port)


def test_shadow_specific_keys(
    shadow_servers: list[Memcached], start_mcrouter: StartMcrouter
) -> None:
    """test_shadow.py TestShadow.test_normal_shadow_specific_keys: `keys_to_shadow`
    matches the key without its hash stop (`|#|` and after)."""
    foo_0, foo_1, _, _, _, specific, _ = shadow_servers
    mcr = start_mcrouter("test_shadow", shadow_servers)
    kv = [(f"f{i}|#|ignored", f"value{i}") for i in range(101, 111)]
    shadow_keys = kv[:6]
    for key, value in kv:
        mcr.set(key, value)
    assert poll(shadow_landed([specific], shadow_keys))
    for key, value in kv:
        assert get_on(foo_0, key) == value or get_on(foo_1, key) == value
        assert get_on(specific, key) == (value if (key, value) in shadow_keys else None)


@pytest.mark.parametrize(
    ("prefix", "shadow_indexes", "bar_0_holds"),
    [
        ("b_migrate", [26, 30, 39, 63], False),
        ("b_old", [10, 33, 35, 43, 45, 46, 47, 62, 85], True),
        ("b_new", [10, 11, 15, 34, 40, 43, 47, 71, 93], False),
    ],
    ids=["test_migrated_shadow", "test_migrated_old_shadow", "test_migrated_new_shadow"],
)
def test_migrated_shadow(
    prefix: str,
    shadow_indexes: list[int],
    bar_0_holds: bool,
    shadow_servers: list[Memcached],
    start_mcrouter: StartMcrouter,
) -> None:
    """test_shadow.py TestShadow.test_migrated_shadow, test_migrated_old_shadow and
    test_migrated_new_shadow: named PoolRoutes with shadows, behind a MigrateRoute
    (long migrated to `bar-new`) or alone."""
    _, _, bar_0, bar_1, _, _, bar_shadow = shadow_servers
    mcr = start_mcrouter("test_shadow", shadow_servers)
    kv = [(f"{prefix}{i}", f"value{i}") for i in range(100)]
    shadow_keys = [kv[i] for i in shadow_indexes]
    for key, value in kv:
        mcr.set(key, value)
    assert poll(shadow_landed([bar_shadow], shadow_keys))
    for key, value in kv:
        assert get_on(bar_0, key) == (value if bar_0_holds else None)
        assert get_on(bar_1, key) == (None if bar_0_holds else value)
        assert get_on(bar_shadow, key) == (value if (key, value) in shadow_keys else None)


def test_shadow_route(memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter) -> None:
    """test_shadow_route.py TestShadowRoute.test_shadow_route: ShadowRoute under an
    AllSyncRoute; both foo servers get every set, the shadows the keys in range."""
    foo_0, foo_1, foo_shadow, bar_shadow = (memcached_factory() for _ in range(4))
    mcr = start_mcrouter("test_shadow_route", [foo_0, foo_1, foo_shadow, bar_shadow])
    kv = [(f"f{i}", f"value{i}") for i in range(100)]
    shadow_keys = [kv[i] for i in NORMAL_SHADOW_INDEXES]
    for key, value in kv:
        mcr.set(key, value)
    assert poll(shadow_landed([foo_shadow, bar_shadow], shadow_keys))
    for key, value in kv:
        assert get_on(foo_0, key) == value
        assert get_on(foo_1, key) == value
        expected = value if (key, value) in shadow_keys else None
        assert get_on(foo_shadow, key) == expected
        assert get_on(bar_shadow, key) == expected


def test_shadow_with_file(
    memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter, tmp_path: Path
) -> None:
    """test_shadow_with_file.py test_shadow_with_file: the shadow comes from an
    `@import`ed file and its ports from `--config-params`."""
    imported = "test_shadow_with_file_config.json"  # next to the config, as in mcrouter's
    shutil.copy(CONFIGS / imported, tmp_path / imported)
    mc1, mc2, shadow = (memcached_factory() for _ in range(3))
    params = f"PORT_1:{mc1.port},PORT_2:{mc2.port},PORT_SHADOW:{shadow.port}"
    mcr = start_mcrouter("test_shadow_with_file", [], "--config-params", params)
    kv = [(f"f{i}", f"value{i}") for i in range(100)]
    for key, value in kv:
        mcr.set(key, value)
        assert get_on(mc1, key) == value or get_on(mc2, key) == value
    shadow_keys = [kv[i] for i in NORMAL_SHADOW_INDEXES]
    assert poll(shadow_landed([shadow], shadow_keys))
    for key, value in kv:
        assert get_on(shadow, key) == (value if (key, value) in shadow_keys else None)


# -- test_bigvalue.py ----------------------------------------------------------------


MC_MSG_FLAG_BIG_VALUE = 0x8000
BIG_VALUE_ARGS = ("--big-value-split-threshold", "5000", "--big-value-batch-size", "2", "-t", "30")


def bigvalue_mcrouter(memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory) -> McClient:
    """test_bigvalue.py's proxy over its one server, `[::1]:10001` in the config."""
    server = memcached_factory("-l", "::1")
    text = (CONFIGS / "test_bigvalue.json").read_text()
    proxy = proxy_factory(text.replace("[::1]:10001", f"[::1]:{server.port}"), *BIG_VALUE_ARGS)
    return McClient(proxy.port)


def test_bigvalue(memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory) -> None:
    """test_bigvalue.py TestBigvalue.test_bigvalue: a 21 MB value, in 5000-byte
    pieces whose last is shorter, comes back whole."""
    mcr = bigvalue_mcrouter(memcached_factory, proxy_factory)
    value = "abc" * (7 * 1000 * 1000 + 5)
    assert mcr.set("key", value)
    assert mcr.get("key") == value  # not ==-asserted with the value shown: 21 MB
    mcr.close()


def test_bigvalue_manual_pieces(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_bigvalue.py test_bigvalue_leases_hit_meta_miss_piece and
    test_bigvalue_leases_delete_stale_value, up to their lease-get (a command of
    mcrouter's protocol only): an item flagged as big value's metadata (0x8000) is
    read back from its pieces; with a piece or the metadata deleted it is a miss."""
    mcr = bigvalue_mcrouter(memcached_factory, proxy_factory)
    value = "a" * 5000 + "a"
    metadata = b"1-2-1234"
    reply = mcr.client.call(
        b"set key %d 0 %d\r\n%s\r\n" % (MC_MSG_FLAG_BIG_VALUE, len(metadata), metadata)
    )
    assert reply == b"STORED\r\n"
    assert mcr.set("key:0:1234", value[:5000])
    assert mcr.set("key:1:1234", value[5000:])
    assert mcr.get("key") == value
    assert mcr.delete("key:1:1234")
    assert mcr.get("key") is None
    assert mcr.delete("key")
    assert mcr.get("key") is None
    mcr.close()


# -- hashing and pools: test_const_shard_hash.py, test_bucketized_poolroute.py ----


def test_const_shard_hash(
    memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_const_shard_hash.py test_const_shard_hash (over ASCII): ConstShard sends
    `foo:<n>:...` to server n."""
    mc1, mc2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_const_shard_hash", [mc1, mc2])
    assert mcr.set("foo:0:test", "value0")
    assert get_on(mc1, "foo:0:test") == "value0"
    assert get_on(mc2, "foo:0:test") is None
    assert mcr.set("foo:1:test", "value1")
    assert get_on(mc1, "foo:1:test") is None
    assert get_on(mc2, "foo:1:test") == "value1"


@pytest.mark.parametrize(
    ("config", "holder"),
    [
        ("mcrouter_test_bucketized_poolroute_bucketized", 4),
        ("mcrouter_test_bucketized_poolroute_nonbucketized", 2),
    ],
    ids=["TestBucketizedPoolRoute", "TestNonBucketizedPoolRoute"],
)
def test_bucketized_pool_route(
    config: str, holder: int, memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_bucketized_poolroute.py, both classes' test_bucketized_pool_route (over
    ASCII): `key1` is in bucket 808 of 1000, on the fifth server; without buckets
    WeightedCh3 puts it on the third."""
    servers = [memcached_factory() for _ in range(5)]
    mcr = start_mcrouter(config, servers)
    assert mcr.set("key1", "value1")
    assert mcr.get("key1") == "value1"
    holding = [get_on(server, "key1") for server in servers]
    assert holding == ["value1" if index == holder else None for index in range(5)]


# -- failover: test_migrated_failover.py -----------------------------------------


def test_migrated_failover(
    memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_migrated_failover.py test_migrated_failover (over ASCII): a
    FailoverWithExptimeRoute over two MigrateRoutes long migrated; the normal one's
    server dies and the failover one's answers."""
    servers = [memcached_factory() for _ in range(4)]
    _, mc_a, _, mc_b = servers
    mcr = start_mcrouter(
        "test_migrated_failover", servers, "--probe-timeout-initial=100",
        "--probe-timeout-max=100",
    )  # fmt: skip
    assert set_on(mc_a, "key", "a")
    assert set_on(mc_b, "key", "b")
    assert mcr.get("key") == "a"
    mc_a.stop()
    assert poll(lambda: mcr.get("key") == "b", seconds=10)


# -- L1/L2: test_mcrouter_basic.py TestMcrouterBasicL1L2 ncache ---------------------


@pytest.mark.parametrize("command", ["get", "gat"])
def test_l1_l2_ncache(
    command: str, memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_mcrouter_basic.py TestMcrouterBasicL1L2.test_l1_l2_get_ncache and
    test_l1_l2_gat_ncache: an L2 miss leaves `ncache` in L1, read as a miss; every
    fifth such read (`ncacheUpdatePeriod`) refreshes L1 from L2 in the background."""
    l1, l2 = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_basic_l1_l2_ncache", [l1, l2])

    def read(key: str) -> object:
        return mcr.get(key) if command == "get" else mcr.gat(0, key)

    assert not read("key1")
    assert poll(lambda: get_on(l1, "key1") == "ncache")
    assert set_on(l2, "key1", "value1")
    for _ in range(3):
        assert not read("key1")
    if command == "gat":
        reads = [mcr.gats(0, "key1") for _ in range(2)]
    else:
        reads = [read("key1") for _ in range(2)]
    assert not any(reads)
    assert poll(lambda: get_on(l1, "key1") == "value1")
    assert read("key1") == "value1"


# -- warm-up: test_warmup2.py -------------------------------------------------------


def exptime_of(server: Memcached, key: str) -> int:
    """The item's absolute exptime (0: never), from memcached's `mg <key> t`."""
    with mc(server) as direct:
        reply = direct.client.call(f"mg {key} t\r\n".encode()).decode().split()
    assert reply[0] == "HD", reply
    ttl = int(reply[1][1:])
    return 0 if ttl == -1 else int(time.time()) + ttl


def test_warmup2_get(memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter) -> None:
    """test_warmup2.py TestWarmup2.test_warmup_get: a warm hit is copied to the cold
    pool; a delete goes to the cold pool only. The copy's exptime is the config's
    (none here: 0), as in open-source mcrouter, whose `isMetagetAvailable()` is
    false: mcrouter's test expects the warm item's remaining exptime, which only a
    build that asks the warm server with `metaget` copies."""
    warm, cold = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_warmup2", [warm, cold])
    with mc(warm) as direct:
        assert direct.set("key", "value", exptime=1000)
    assert mcr.get("key") == "value"
    assert poll(lambda: get_on(cold, "key") == "value")
    assert exptime_of(warm, "key") == pytest.approx(time.time() + 1000, abs=20)
    assert exptime_of(cold, "key") == 0
    with mc(warm) as direct:
        assert direct.delete("key")
    assert mcr.get("key") == "value"
    with mc(cold) as direct:
        assert direct.delete("key")
    assert mcr.get("key") is None

    set_time = int(time.time())
    with mc(warm) as direct:
        assert direct.set("key2", "value2", exptime=100)
    after_set_time = int(time.time())
    assert mcr.get("key2") == "value2"
    assert poll(lambda: get_on(cold, "key2") == "value2")
    assert set_time + 100 <= exptime_of(warm, "key2") <= after_set_time + 100
    # "you should keep warm consistent by yourself"
    assert mcr.delete("key2")
    assert get_on(warm, "key2") == "value2"
    assert mcr.get("key2") == "value2"


def test_warmup2_append_prepend_touch(
    memcached_factory: MemcachedFactory, start_mcrouter: StartMcrouter
) -> None:
    """test_warmup2.py TestWarmup2AppendPrependTouch.test_warmup_append_prepend and
    test_warmup_touch (over ASCII; the touch's exptime read with memcached's `mg`
    where mcrouter's test uses its `metaget`): updates go to the cold pool."""
    warm, cold = memcached_factory(), memcached_factory()
    mcr = start_mcrouter("test_warmup2", [warm, cold])
    assert mcr.set("key", "value", exptime=1000)
    assert get_on(cold, "key") == "value"
    assert mcr.client.call(b"append key 0 0 6\r\nsuffix\r\n") == b"STORED\r\n"
    assert get_on(cold, "key") == "valuesuffix"
    assert mcr.client.call(b"prepend key 0 0 6\r\nprefix\r\n") == b"STORED\r\n"
    assert get_on(cold, "key") == "prefixvaluesuffix"
    assert get_on(warm, "key") is None
    assert mcr.client.call(b"touch key 0\r\n") == b"TOUCHED\r\n"
    assert exptime_of(cold, "key") == 0


# -- servers' states: test_tko_inactive.py, test_mcrouter_states.py -----------------


def test_tko_inactive(fault_server: FaultServerFactory, proxy_factory: ProxyFactory) -> None:
    """test_tko_inactive.py test_tko_inactive: a server that never answers (mcrouter's
    SleepServer) is TKO after one timeout; its idle connection is reset later and
    the proxy lives on."""
    sleeper = fault_server(lambda conn: conn.wait_closed())
    proxy = proxy_factory(
        mcrouter_config("mcrouter_test_basic_1_1_1", [sleeper.port]),
        "--timeouts-until-tko", "1", "--reset-inactive-connection-interval", "750",
        "--server-timeout", "500", "--probe-timeout-initial", "500",
    )  # fmt: skip
    with mc(proxy) as mcr:
        reply = mcr.get("hit")
        assert isinstance(reply, str) and "SERVER_ERROR" in reply
        time.sleep(3)  # mcrouter's test: the proxy survives the TKO's probes
        assert proxy.process.poll() is None
        assert mcr.stats()["num_suspect_servers"] == "1"


def test_mcrouter_states(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    """test_mcrouter_states.py test_mcrouter_states: `num_servers` counts each worker's
    connection to the server (two with `--num-proxies 2`) and always equals the sum
    of new, up, down and closed; a config change keeps that true."""
    proxy = proxy_factory(
        mcrouter_config("mcrouter_test_basic_1_1_1", [memcached]), "--num-proxies", "2",
        "-r", "100", "--reconfiguration-delay-ms", "100",
    )  # fmt: skip
    mcr, c2 = McClient(proxy.port), McClient(proxy.port)
    try:

        def invariant() -> bool:
            stat = mcr.stats()
            states = ("new", "up", "down", "closed")
            return int(stat["num_servers"]) == sum(int(stat[f"num_servers_{s}"]) for s in states)

        def servers(up: str, down: str) -> Callable[[], bool]:
            def check() -> bool:
                stat = mcr.stats()
                wanted = {"num_servers": "2", "num_servers_up": up, "num_servers_down": down}
                return all(stat[name] == value for name, value in wanted.items())

            return check

        assert invariant()
        assert mcr.set("key", "value") and c2.set("key", "value")
        assert mcr.get("key") == "value" and c2.get("key") == "value"

        # mcrouter's two clients reach both of its proxies; the kernel spreads
        # connections over the workers here, so new ones are opened until both
        # workers have connected to the server.
        def both_workers_up() -> bool:
            with mc(proxy) as another:
                assert another.get("key") == "value"
            return servers("2", "0")()

        assert poll(both_workers_up, seconds=10)
        assert invariant()

        memcached.stop()  # "down aka hard tko"
        for client in (mcr, c2):
            reply = client.get("key")
            assert isinstance(reply, str) and "SERVER_ERROR" in reply

        def both_workers_down() -> bool:
            with mc(proxy) as another:
                reply = another.get("key")
                assert isinstance(reply, str) and "SERVER_ERROR" in reply
            return servers("0", "2")()

        assert poll(both_workers_down, seconds=10)
        assert invariant()

        config = next(Path(proxy.log_path).parent.glob("config-*.json"))
        config.write_text(mcrouter_config("mcrouter_test_basic_2_1_1", [memcached]))
        # Its routes lack the default route /././: mcrouter refuses it too ("invalid
        # default route") and goes on with the config it has; the test checks
        # only that the counts still add up and that it did not crash.
        assert poll(lambda: "invalid default route: /././" in proxy.log(), seconds=10)
        assert invariant()
        assert mcr.stats()["num_servers"] == "2"
        assert proxy.process.poll() is None
    finally:
        mcr.close()
        c2.close()


# -- test_modify_key.py ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["/c/d/", "/d/e/", "/i/j/"])
def test_modify_key_invalid_empty_key_message(
    key: str, memcached: Memcached, start_mcrouter: StartMcrouter
) -> None:
    """test_modify_key.py assertInvalidEmptyKey (over ASCII, where mcrouter's local
    error is a SERVER_ERROR): a key left empty once modified is refused with
    mcrouter's exact message."""
    mcr = start_mcrouter("test_modify_key", [memcached], route="/a/a/")
    reply = mcr.client.call(f"set {key} 0 0 5\r\nvalue\r\n".encode())
    assert reply == b"SERVER_ERROR ModifyKeyRoute: invalid key: invalid key: missing\r\n"


# -- test_async_files.py ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "config_hash"),
    [
        ("mcrouter_test_basic_1_1_1", "837ae7d82f2fe7cb785b941dae505811"),
        ("mcrouter_test_basic_3_1_1", "37ba14d3319c638d970353f6f3861c68"),
    ],
    ids=["TestAsyncFiles", "TestNamedAsyncFiles"],
)
def test_async_files(config: str, config_hash: str, tmp_path: Path) -> None:
    """test_async_files.py test_async_files (and test_stats_no_requests), started as
    mcrouter's harness starts mcrouter (MCProcess.McrouterBase): an inherited listening
    socket, `-a` spool and `--stats-root`; the config file as it is (no server was
    started, so its ports are not replaced and nothing listens there). A failed
    delete is spooled in asynclog version 2, naming the pool; the stats files
    (`libmcrouter.mcrouter.0.*`: no port, router name 0) are rewritten every 100 ms."""
    spool, stats_dir = tmp_path / "spool.mcrouter", tmp_path / "stats"
    spool.mkdir()
    stats_dir.mkdir()
    listen_sock = harness_listen_socket()
    port = listen_sock.getsockname()[1]
    command = [
        sys.executable, "-m", "mcrouter_trio", "--config", f"file:{CONFIGS / config}.json",
        "-L", str(tmp_path / "mcrouter.log"), "-a", str(spool), "--stats-root", str(stats_dir),
        "--listen-sock-fd", str(listen_sock.fileno()), "--stats-logging-interval", "100",
        "--use-asynclog-version2",
    ]  # fmt: skip
    process = subprocess.Popen(command, pass_fds=[listen_sock.fileno()], stderr=subprocess.PIPE)
    listen_sock.close()
    prefix = "libmcrouter.mcrouter.0."
    files = [stats_dir / f"{prefix}{name}" for name in ("stats", "startup_options",
                                                        "config_sources_info")]  # fmt: skip
    try:
        with mc_port(port) as mcr:
            assert not mcr.delete("key")  # mcrouter's client: None, a SERVER_ERROR

            def spooled() -> list[Path]:
                return [path for path in spool.rglob("*") if path.is_file()]

            assert poll(lambda: len(spooled()) == 1 and "foo" in spooled()[0].read_text())
        assert poll(lambda: all(path.exists() for path in files), seconds=10)
        stats_file, startup_file, sources_file = files
        assert json.loads(stats_file.read_text())[f"{prefix}uptime"] >= 0
        assert json.loads(startup_file.read_text())["default_route"] == "/././"
        assert json.loads(sources_file.read_text())["mcrouter_config"] == config_hash
        now = time.time()
        assert poll(lambda: all(path.stat().st_mtime > now for path in files), seconds=5)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("name", "timeouts"),
    [("test_duplicate_servers", [1000]), ("test_duplicate_servers_difftimeouts", [1000, 2000])],
)
def test_duplicate_servers(
    memcached: Memcached, proxy_factory: ProxyFactory, name: str, timeouts: list[int]
) -> None:
    """test_mcrouter.py TestDuplicateServers and TestDuplicateServersDiffTimeouts: a
    server listed several times is one destination per server timeout, each with its
    `stats servers` line, before any request."""
    proxy = proxy_factory(mcrouter_config(name, [memcached]), "-R", "/a/a/")
    with mc(proxy) as mcr:
        keys = sorted(mcr.stats("servers"))
    assert keys == [f"{memcached.address}:ascii:plain:notcompressed-{ms}" for ms in timeouts]
