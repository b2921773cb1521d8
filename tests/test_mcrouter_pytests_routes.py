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

import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import Conn, FaultServer, Memcached, Proxy, poll
from test_mcrouter_pytests import CONFIGS, McClient, get_on, set_on, start_mcrouter

__all__ = ["start_mcrouter"]  # a fixture, used by name

MemcachedFactory = Callable[..., Memcached]
FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]
StartMcrouter = Callable[..., McClient]
ProxyFactory = Callable[..., Proxy]


def answer_every_request(reply: Callable[[bytes], bytes]) -> Callable[[Conn], None]:
    """A fault-server handler answering each request line with `reply(line)`."""

    def handler(conn: Conn) -> None:
        while (line := conn.readline()) is not None:
            if not conn.send(reply(line)):
                return

    return handler


def error_server(message: str) -> Callable[[Conn], None]:
    """mcrouter's CustomErrorServer: one request answered `message`, then closed."""

    def handler(conn: Conn) -> None:
        if conn.readline() is not None:
            conn.send(message.encode() + b"\r\n")

    return handler


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

    def echo_port(server: list[FaultServer]) -> Callable[[bytes], bytes]:
        def reply(line: bytes) -> bytes:
            port = str(server[0].port).encode()
            return b"VALUE hit 0 %d\r\n%s\r\nEND\r\n" % (len(port), port)

        return reply

    servers = []
    for _ in range(8):
        holder: list[FaultServer] = []
        holder.append(fault_server(answer_every_request(echo_port(holder))))
        servers.append(holder[0])
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
