"""mcrouter's own test configs (tests/data/mcrouter-configs, see its README) and
routing prefixes across clusters, through a real proxy and real memcached.

The routing-prefix rows replay mcrouter's `test_routing_prefixes.py`,
`test_mcrouter_basic.py` and `test_config_params.py` on the same configs; as in
mcrouter's harness, the configs' ports 12345, 12346, ... are replaced by the
ports of the memcached servers the test starts, in that order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Memcached, Proxy, connect, direct_get, poll
from handle_helpers import request

from mcrouter_trio.config import ConfigError, load_config_file
from mcrouter_trio.routing.handles.simple import NullRoute

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

CONFIGS = Path(__file__).parent / "data" / "mcrouter-configs"

# Every config loads; (file, -R, --config-params, the routing prefixes it serves).
LOADS = [
    ("mcrouter_test_basic_1_1_1", "/././", {}, ["/././"]),
    ("mcrouter_test_basic_2_1_1", "/a/a/", {}, ["/a/a/", "/b/b/"]),
    ("mcrouter_test_basic_3_1_1", "/././", {}, ["/././"]),
    ("routing_prefix_test_ascii", "/a/a/", {}, ["/a/a/", "/b/b/", "/c/c/", "/d/d/"]),
    ("routing_prefix_test_old_naming", "/a/a/", {}, ["/a/a/", "/b/b/", "/c/c/", "/d/d/"]),
    ("routing_prefix_test_simple_routes", "/a/a/", {}, ["/a/a/", "/b/b/", "/c/c/", "/d/d/"]),
    ("routing_prefix_test_custom", "/a/a/", {}, ["/a/a/", "/a/b/", "/b/a/", "/b/b/"]),
    (
        "routing_prefix_test_fallback_route",
        "/a/a/",
        {},
        ["/a/a/", "/a/b/", "/a/fallback/", "/b/a/", "/b/b/", "/b/fallback/"],
    ),
    ("test_duplicate_servers", "/a/a/", {}, ["/a/a/", "/b/b/"]),
    ("test_duplicate_servers_difftimeouts", "/a/a/", {}, ["/a/a/", "/b/b/"]),
    (
        "test_logical_routing_policies",
        "/region2/cluster3/",
        {},
        ["/region1/cluster1/", "/region1/cluster2/", "/region2/cluster3/"],
    ),
    ("test_config_params", "/././", {"PORT": "5000", "POOL": "A"}, ["/././"]),
    ("test_ascii_gut", "/././", {}, ["/././"]),
    ("test_basic_all_sync", "/././", {}, ["/././"]),
    ("test_bigvalue", "/././", {}, ["/././"]),
    ("test_const_shard_hash", "/././", {}, ["/././"]),
    ("test_lease_pairing_disabled", "/././", {}, ["/././"]),
    ("test_lease_pairing_basic", "/././", {}, ["/././"]),
    ("test_lease_pairing_nested", "/././", {}, ["/././"]),
    ("test_deterministic_failover2", "/././", {}, ["/././"]),
    ("test_deterministic_failover3", "/Route/A/", {}, ["/Route/A/"]),
    ("test_deterministic_failover4", "/Route/A/", {}, ["/Route/A/"]),
    ("test_logging_route_mc", "/././", {}, ["/././"]),
    ("test_miss_on_error_arith_ops", "/././", {}, ["/././"]),
    ("test_named_handles_list", "/././", {}, ["/././"]),
    ("test_named_handles_obj", "/././", {}, ["/././"]),
    ("test_noreply", "/././", {}, ["/././"]),
    ("test_nullroute", "/././", {}, ["/././"]),
    ("test_poolstats", "/././", {}, ["/././"]),
    ("test_probe_timeout", "/././", {}, ["/././"]),
    ("test_send_to_all_hosts", "/././", {}, ["/././"]),
    ("test_service_info", "/././", {}, ["/././"]),
    ("test_tko_reconfigure1", "/././", {}, ["/././"]),
    ("test_tko_reconfigure2", "/././", {}, ["/././"]),
    ("test_warmup2", "/././", {}, ["/././"]),
    ("already_replied", "/././", {}, ["/././"]),
    ("mcrouter_test_bucketized_poolroute_bucketized", "/././", {}, ["/././"]),
    ("mcrouter_test_bucketized_poolroute_nonbucketized", "/././", {}, ["/././"]),
    ("mcrouter_test_portoverride", "/././", {"PORT": "5000"}, ["/././"]),
    ("test_basic_all_first", "/././", {}, ["/././"]),
    ("test_basic_all_majority", "/././", {}, ["/././"]),
    ("test_basic_failover", "/././", {}, ["/././"]),
    ("test_basic_failover_least_failures", "/././", {}, ["/././"]),
    ("test_basic_failover_override", "/././", {}, ["/././"]),
    ("test_basic_l1_l2", "/././", {}, ["/././"]),
    ("test_basic_l1_l2_ncache", "/././", {}, ["/././"]),
    ("test_custom_failover", "/././", {}, ["/././"]),
    ("test_custom_failover_override", "/././", {}, ["/././"]),
    ("test_dev_null", "/././", {}, ["/././"]),
    ("test_empty_pool", "/././", {}, ["/././"]),
    ("test_failover_limit", "/././", {}, ["/././"]),
    ("test_failover_limit_error", "/././", {}, ["/././"]),
    ("test_get_failover", "/././", {}, ["/././"]),
    ("test_largeobj", "/././", {}, ["/././"]),
    ("test_max_shadow_requests", "/././", {}, ["/././"]),
    ("test_mcrouter_processing_time", "/././", {}, ["/././"]),
    ("test_migrated_failover", "/././", {}, ["/././"]),
    ("test_migrated_pools", "/././", {}, ["/././"]),
    ("test_migrated_pools_failover", "/././", {}, ["/././"]),
    ("test_modify_exptime", "/././", {}, ["/././"]),
    (
        "test_modify_key",
        "/a/a/",
        {},
        [
            "/a/a/",
            "/b/c/",
            "/c/d/",
            "/d/e/",
            "/e/f/",
            "/f/g/",
            "/g/h/",
            "/h/i/",
            "/i/j/",
            "/d/w/",
            "/e/w/",
            "/f/w/",
            "/j/k/",
            "/j/l/",
        ],
    ),
    ("test_probe_timeout_reconfig", "/././", {}, ["/././"]),
    ("test_server_stats_pending", "/././", {}, ["/././"]),
    ("test_shadow", "/././", {}, ["/././"]),
    ("test_shadow_route", "/././", {}, ["/././"]),
    (
        "test_shadow_with_file",
        "/././",
        {"PORT_1": "5001", "PORT_2": "5002", "PORT_SHADOW": "5003"},
        ["/././"],
    ),
    ("test_warmup", "/././", {}, ["/././"]),
    ("test_wch3", "/test/A/", {}, ["/test/A/", "/test/B/", "/test/C/"]),
    ("test_slow_warmup", "/././", {}, ["/././"]),
    ("test_shard_splits", "/././", {}, ["/././"]),
    ("test_foreach_client", "/././", {}, ["/././"]),
    ("test_same_pool_failover", "/././", {}, ["/././"]),
    ("test_get_failover_with_failover_tag", "/././", {}, ["/././"]),
    ("test_ascii", "/././", {}, ["/././"]),
    ("test_pool_server_errors", "/a/a/", {}, ["/a/a/", "/b/b/"]),
]

#: Strings mcrouter's harness replaces in a config before it starts mcrouter
#: (`replace_map`): these files are templates, not configs, until then.
HARNESS_REPLACES = {
    "test_migrated_pools": {"START_TIME": "1700000000"},
    "test_migrated_pools_failover": {"START_TIME": "1700000000"},
}
#: Files a config `@import`s: not configs themselves.
IMPORTED = {"test_shadow_with_file_config"}


def test_every_copied_config_is_in_the_table() -> None:
    copied = sorted(path.stem for path in CONFIGS.glob("*.json") if path.stem not in IMPORTED)
    assert copied == sorted(row[0] for row in LOADS)


def config_path(name: str, tmp_path: Path) -> Path:
    """The config's file, or a copy with the harness's replacements made."""
    path = CONFIGS / f"{name}.json"
    replaces = HARNESS_REPLACES.get(name)
    if replaces is None:
        return path
    text = path.read_text()
    for old, new in replaces.items():
        text = text.replace(old, new)
    copy = tmp_path / path.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize(("name", "route", "params", "aliases"), LOADS)
def test_mcrouter_config_loads(
    name: str, route: str, params: dict[str, str], aliases: list[str], tmp_path: Path
) -> None:
    path = config_path(name, tmp_path)
    config = load_config_file(path, default_route=route, config_params=params)
    assert [alias.decode() for alias in config.roots] == aliases
    assert config.tree(route.encode()).default_prefix == route.encode()


# mcrouter's test configs this proxy refuses (tests/data/mcrouter-configs/refused), why,
# and the first error it reports.
#: mcrouter's own wire protocols (caret) or Meta's (thrift) to the servers.
PROTOCOL = "protocol"
#: Meta-only features (AxonLog, McRefill).
META_ONLY = "Meta-only"
#: Invalid on purpose: mcrouter's tests expect mcrouter to refuse them.
INVALID = "invalid"
#: Open-source mcrouter refuses it too (and none of its tests loads it).
MCROUTER_REFUSES = "refused by mcrouter"

REFUSED = [
    (
        "invalid_config",
        "/././",
        INVALID,
        "unknown pool 'A.pho' @ $.route",
    ),
    (
        "libmcrouter_invalid_pools",
        "/././",
        INVALID,
        # An object in `servers` is a route slot, and this one has no type.
        "required field missing @ $.pools.A.servers[1].type",
    ),
    (
        "routing_prefix_test_caret",
        "/a/a/",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.wildcard.protocol",
    ),
    (
        "test_axon_log",
        "/././",
        META_ONLY,
        "AxonLogRoute (axonlog: true) exists only inside Meta and is not supported @ "
        "$.route.axonlog",
    ),
    (
        "test_axon_log_alldelete",
        "/././",
        META_ONLY,
        "AxonLogRoute (axonlog: true) exists only inside Meta and is not supported @ "
        "$.route.axonlog",
    ),
    (
        "test_basic_caret",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.foo.protocol",
    ),
    (
        "test_basic_l1_l2_sizesplit",
        "/././",
        PROTOCOL,
        "invalid server 'localhost:12345:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A.servers[0]",
    ),
    (
        "test_basic_l1_l2_sizesplit_bothset",
        "/././",
        PROTOCOL,
        "invalid server 'localhost:12345:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A.servers[0]",
    ),
    (
        "test_basic_l1_l2_sizesplit_retry_invalid",
        "/././",
        PROTOCOL,
        "invalid server 'localhost:12345:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A.servers[0]",
    ),
    (
        "test_basic_l1_l2_sizesplit_retry_valid",
        "/././",
        PROTOCOL,
        "invalid server 'localhost:12345:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A.servers[0]",
    ),
    (
        "test_basic_l1_multiple_l2_sizesplit",
        "/././",
        PROTOCOL,
        "invalid server 'localhost:12345:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A.servers[0]",
    ),
    (
        "test_caret",
        "/././",
        PROTOCOL,
        "invalid server '127.0.0.1:11511:caret' (protocol 'caret' is not supported: "
        "mcrouter's own binary protocol, not memcached's) @ $.pools.A-bar.servers[0]",
    ),
    (
        "test_caret_server",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.mc.protocol",
    ),
    (
        "test_deterministic_failover",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.route.children[1].protocol",
    ),
    (
        "test_deterministic_failover5",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.route.children[1].protocol",
    ),
    (
        "test_deterministic_failover_big_retries",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.route.children[1].protocol",
    ),
    (
        "test_dump_config_invalid",
        "/././",
        INVALID,
        "unknown route type '-PoolRoute' @ $.route",
    ),
    (
        "test_latency_injection_after",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_latency_injection_before",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_latency_injection_total",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_loadbalancer_route",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.wildcard.protocol",
    ),
    (
        "test_loadbalancer_route_thrift",
        "/././",
        PROTOCOL,
        "protocol 'thrift' is not supported: Meta-only Thrift transport @ "
        "$.pools.A.wildcard.protocol",
    ),
    (
        "test_logging_route_server",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.mc.protocol",
    ),
    (
        "test_mcrefill",
        "/././",
        META_ONLY,
        "McRefillRoute exists only inside Meta and is not supported @ $.route",
    ),
    (
        "test_mcrouter_to_mcrouter_tko",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.foo.protocol",
    ),
    (
        "test_operation_selector_route",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_regional_replicated_pools",
        "/././",
        MCROUTER_REFUSES,
        "unknown pool 'mctest.CI0' @ $.route.policies.CI*.children[0]",
    ),
    (
        "test_rendezvous_failover",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.route.children[1].protocol",
    ),
    (
        "test_routing_group_route",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_routing_group_route_incomplete",
        "/././",
        PROTOCOL,
        "protocol 'caret' is not supported: mcrouter's own binary protocol, not "
        "memcached's @ $.pools.A.protocol",
    ),
    (
        "test_thrift",
        "/././",
        PROTOCOL,
        "invalid server '127.0.0.1:11511:thrift' (protocol 'thrift' is not supported: "
        "Meta-only Thrift transport) @ $.pools.A-bar.servers[0]",
    ),
    (
        "test_thrift_gut",
        "/././",
        PROTOCOL,
        "protocol 'thrift' is not supported: Meta-only Thrift transport @ $.pools.A.protocol",
    ),
]


def test_every_refused_config_is_in_the_table() -> None:
    copied = sorted(path.stem for path in (CONFIGS / "refused").glob("*.json"))
    assert copied == sorted(row[0] for row in REFUSED)


@pytest.mark.parametrize(("name", "route", "why", "error"), REFUSED)
def test_mcrouter_config_refused_with_its_reason(
    name: str, route: str, why: str, error: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(CONFIGS / "refused" / f"{name}.json", default_route=route)
    assert info.value.errors[0] == error
    if why == PROTOCOL:
        assert "mcrouter's own binary protocol" in error or "Meta-only" in error
    if why == META_ONLY:
        assert "exists only inside Meta" in error


def test_failure_domains_reach_the_deterministic_order_policy() -> None:
    config = load_config_file(
        CONFIGS / "test_deterministic_failover4.json", default_route="/Route/A/"
    )
    servers = config.pools["A"].servers
    assert [server.failure_domain for server in servers] == [*range(1, 13), *range(1, 12)]
    route: Any = config.tree(b"/Route/A/").root_for(b"/Route/A/")
    assert route._inner.failover_policy.enable_failure_domains is True


def test_named_handles_are_shared_by_identity() -> None:
    config = load_config_file(CONFIGS / "test_named_handles_obj.json")
    route: Any = config.route
    # route:all -> [route:A, route:B, route:C, route:D]; route:D is AllSyncRoute|route:C.
    a, b, c, d = route.children
    assert (a.pool.name, b.pool.name) == ("A", "B")
    assert c.children == (NullRoute(),)
    assert d.children[0] is c


def test_broken_shadows_are_skipped_and_the_good_ones_kept() -> None:
    """test_shadow.json's policy `f` lists three good shadows and six broken ones."""
    config = load_config_file(CONFIGS / "test_shadow.json")
    route: Any = config.route
    shadows = route.policies["f"].shadows
    assert [shadow.target.pool.name for shadow in shadows] == [
        "foo-shadow", "foo-shadow-specific-keys", "bar-shadow",
    ]  # fmt: skip


def test_wch3_weights_beyond_the_servers_are_ignored() -> None:
    """test_wch3.py: the three aliases pick the same server, never a weight-0 one."""
    config = load_config_file(CONFIGS / "test_wch3.json", default_route="/test/A/")
    routes: list[Any] = [
        config.tree(b"/test/A/").root_for(prefix)
        for prefix in (b"/test/A/", b"/test/B/", b"/test/C/")
    ]
    for index in range(2000):
        key = b"someprefix:%d:|#|id=123" % index
        picked = {route.selected_index(request(b"get " + key + b"\r\n")) for route in routes}
        assert len(picked) == 1 and picked.isdisjoint({0, 3})


def test_port_override_and_a_hostless_server(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """mcrouter_test_portoverride: the pool's server is "localhost", the port comes from
    `port_override`, filled by --config-params."""
    text = (
        (CONFIGS / "mcrouter_test_portoverride.json").read_text().replace("localhost", "127.0.0.1")
    )
    proxy = proxy_factory(text, "--config-params", f"PORT:{memcached.port}")
    with connect(proxy.port) as client:
        assert client.call(b"set key 0 0 5\r\nvalue\r\n") == b"STORED\r\n"
        assert client.call(b"get key\r\n", b"END\r\n") == b"VALUE key 0 5\r\nvalue\r\nEND\r\n"
    assert value_of(memcached, b"key") == b"value"


def test_modify_exptime_with_a_one_server_pool_as_target(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """test_modify_exptime.py: `"target": "Pool|A"` (one server) is that server's route."""
    proxy = proxy_factory(mcrouter_config("test_modify_exptime", [memcached]))
    with connect(proxy.port) as client, connect(memcached.port) as direct:
        assert direct.call(b"set a 0 0 5\r\nvalue\r\n") == b"STORED\r\n"
        assert client.call(b"get a\r\n", b"END\r\n") == b"VALUE a 0 5\r\nvalue\r\nEND\r\n"
        # Policy a sets exptime -1: the value is gone at once.
        assert client.call(b"set a 0 0 6\r\nvalue2\r\n") == b"STORED\r\n"
        assert value_of(memcached, b"a") is None
        # Policy b sets exptime 0: the client's -1 becomes "never expires".
        assert client.call(b"set b 0 -1 5\r\nvalue\r\n") == b"STORED\r\n"
        assert value_of(memcached, b"b") == b"value"


def test_same_pool_failover_ignores_the_unknown_default(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """test_mcrouter_serialized.py TestSamePoolFailover: OperationSelectorRoute's
    `default` is no key of it (mcrouter ignores it); gets, sets and deletes work."""
    proxy = proxy_factory(mcrouter_config("test_same_pool_failover", [memcached]))
    with connect(proxy.port) as client:
        assert client.call(b"get foobar\r\n", b"END\r\n") == b"END\r\n"
        assert client.call(b"set foobar 0 0 7\r\nbizbang\r\n") == b"STORED\r\n"
        assert client.call(b"get foobar\r\n", b"END\r\n") == (
            b"VALUE foobar 0 7\r\nbizbang\r\nEND\r\n"
        )
        assert value_of(memcached, b"foobar") == b"bizbang"
        # AllSyncRoute|Pool|A.wildcard: the pool lists the server twice, so one of
        # the two deletes finds nothing; as in mcrouter's test, the reply is not checked.
        client.call(b"delete foobar\r\n")
        assert value_of(memcached, b"foobar") is None
        assert client.call(b"get foobar\r\n", b"END\r\n") == b"END\r\n"


def test_failover_tag_marks_the_keys_written_to_the_failover_pool(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_mcrouter_serialized.py TestGetFailoverWithFailoverTag: with the normal
    pool down, a key with a hash stop reaches the gutter as `<key>:failover=1`."""
    gut, wildcard = memcached_factory(), memcached_factory()
    proxy = proxy_factory(mcrouter_config("test_get_failover_with_failover_tag", [gut, wildcard]))
    key = b"testkey|#|extra=1"
    with connect(proxy.port) as client:
        assert client.call(b"get " + key + b"\r\n", b"END\r\n") == b"END\r\n"
        assert client.call(b"set " + key + b" 0 0 7\r\nbizbang\r\n") == b"STORED\r\n"
        assert value_of(wildcard, key) == b"bizbang"
        wildcard.stop()
        assert client.call(b"get " + key + b"\r\n", b"END\r\n") == b"END\r\n"
        assert client.call(b"set " + key + b" 0 0 12\r\nbizbang-fail\r\n") == b"STORED\r\n"
        assert client.call(b"get " + key + b"\r\n", b"END\r\n") == (
            b"VALUE " + key + b" 0 12\r\nbizbang-fail\r\nEND\r\n"
        )
    assert value_of(gut, key + b":failover=1") == b"bizbang-fail"
    assert value_of(gut, key) is None


def test_ascii_latest_pools_and_the_reject_policy(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_mcrouter_sanity_mock.py on test_ascii.json: `rej:` keys are refused by
    ErrorRoute|reject; `lat:` keys go to PoolRoutes whose hash is `Latest`."""
    a_lat, b_lat, c_lat, other = (memcached_factory() for _ in range(4))
    lat_ports = {"11513": a_lat.port, "11523": b_lat.port, "11533": c_lat.port}
    text = re.sub(
        r"\b(?:115[0-9][0-9]|6553[0-9]|6552[0-9])\b",
        lambda match: str(lat_ports.get(match.group(0), other.port)),
        (CONFIGS / "test_ascii.json").read_text(),
    )
    proxy = proxy_factory(text)
    with connect(proxy.port) as client:
        assert client.call(b"set rej:foo 0 0 3\r\nrej\r\n") == b"SERVER_ERROR reject\r\n"
        assert client.call(b"set lat:k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert value_of(a_lat, b"lat:k") == b"v"
        assert client.call(b"get lat:k\r\n", b"END\r\n") == b"VALUE lat:k 0 1\r\nv\r\nEND\r\n"
        with connect(b_lat.port) as direct:
            assert direct.call(b"set lat:k 0 0 1\r\nw\r\n") == b"STORED\r\n"
        # Deletes take policy-lat: AllInitialRoute over the three Latest pools.
        assert client.call(b"delete lat:k\r\n") == b"DELETED\r\n"
        assert value_of(a_lat, b"lat:k") is None
        assert poll(lambda: value_of(b_lat, b"lat:k") is None)
        # rej: deletes go to B-rej through a Latest PoolRoute: B-rej is b_lat's port.
        with connect(b_lat.port) as direct:
            assert direct.call(b"set rej:x 0 0 1\r\nr\r\n") == b"STORED\r\n"
        assert client.call(b"delete rej:x\r\n") == b"DELETED\r\n"
        assert value_of(b_lat, b"rej:x") is None


def mcrouter_config(name: str, servers: Sequence[Memcached]) -> str:
    """A config of mcrouter's test suite with its ports 12345... made ours."""
    text = (CONFIGS / f"{name}.json").read_text()
    ports = {str(12345 + index): str(server.port) for index, server in enumerate(servers)}
    text = re.sub(r"\b1234[5-9]\b", lambda match: ports[match.group(0)], text)
    return text.replace("localhost:", "127.0.0.1:")


def value_of(server: Memcached, key: bytes) -> bytes | None:
    reply = direct_get(server, key)
    if reply == b"END\r\n":
        return None
    return reply.split(b"\r\n")[1]


def arrives(server: Memcached, key: bytes, value: bytes) -> bool:
    """True once `key` holds `value` (background copies land a little later)."""
    return poll(lambda: value_of(server, key) == value)


@pytest.mark.parametrize(
    "name",
    ["routing_prefix_test_ascii", "routing_prefix_test_old_naming",
     "routing_prefix_test_simple_routes"],
)  # fmt: skip
def test_routing_prefix_broadcast_keeps_the_prefix_where_pools_ask(
    name: str, memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    hosts = [memcached_factory() for _ in range(4)]
    proxy = proxy_factory(mcrouter_config(name, hosts), "-R", "/a/a/")
    with connect(proxy.port) as client:
        assert client.call(b"set testkeylocal 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert value_of(hosts[0], b"testkeylocal") == b"v"
        assert [value_of(host, b"testkeylocal") for host in hosts[1:]] == [None] * 3

        assert client.call(b"set /*/*/testkey-routing 0 0 1\r\nw\r\n") == b"STORED\r\n"
        assert arrives(hosts[0], b"testkey-routing", b"w")  # A strips the prefix
        for host in hosts[1:]:  # B, C and D keep it
            assert arrives(host, b"/*/*/testkey-routing", b"w")


def test_fallback_cluster_and_broadcast(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    aa, ab, ba, bb = (memcached_factory() for _ in range(4))
    config = mcrouter_config("routing_prefix_test_fallback_route", [aa, ab, ba, bb])
    proxy = proxy_factory(config, "-R", "/a/a/")
    with connect(proxy.port) as client:
        assert client.call(b"set /*/*/key 0 0 4\r\norig\r\n") == b"STORED\r\n"
        for server in (aa, ab, ba, bb):
            assert arrives(server, b"key", b"orig")
        # /a/foobar/ is not an alias: /a/fallback/ (pool aa) answers for it.
        assert client.call(b"set /a/foobar/key 0 0 6\r\nvalue1\r\n") == b"STORED\r\n"
        assert value_of(aa, b"key") == b"value1"
        assert [value_of(server, b"key") for server in (ab, ba, bb)] == [b"orig"] * 3


def test_custom_routing_prefix_globs(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    aa, ab, ba, bb = (memcached_factory() for _ in range(4))
    proxy = proxy_factory(
        mcrouter_config("routing_prefix_test_custom", [aa, ab, ba, bb]), "-R", "/a/a/"
    )
    with connect(proxy.port) as client:
        assert client.call(b"set /*/a/key 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert arrives(aa, b"key", b"1") and arrives(ba, b"key", b"1")
        assert value_of(ab, b"key") is None and value_of(bb, b"key") is None
        assert client.call(b"set /b*/*/key 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert arrives(ba, b"key", b"2") and arrives(bb, b"key", b"2")
        assert value_of(aa, b"key") == b"1"
        assert client.call(b"set /b/*b*/key 0 0 1\r\n3\r\n") == b"STORED\r\n"
        assert value_of(bb, b"key") == b"3"
        assert value_of(ba, b"key") == b"2"


def test_config_params_fill_the_config(memcached: Memcached, proxy_factory: ProxyFactory) -> None:
    text = (CONFIGS / "test_config_params.json").read_text().replace("localhost", "127.0.0.1")
    proxy = proxy_factory(text, "--config-params", f"PORT:{memcached.port},POOL:A")
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
    assert value_of(memcached, b"k") == b"v"


def test_remote_cluster_by_prefix(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    mc1, mc2 = memcached_factory(), memcached_factory()
    proxy = proxy_factory(mcrouter_config("mcrouter_test_basic_2_1_1", [mc1, mc2]), "-R", "/a/a/")
    with connect(proxy.port) as client:
        assert client.call(b"set cluster1_key 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert client.call(b"set /b/b/cluster2_key 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert client.call(b"get /b/b/cluster2_key\r\n", b"END\r\n") == (
            b"VALUE /b/b/cluster2_key 0 1\r\n2\r\nEND\r\n"
        )
    assert value_of(mc1, b"cluster1_key") == b"1" and value_of(mc2, b"cluster1_key") is None
    assert value_of(mc2, b"cluster2_key") == b"2" and value_of(mc1, b"cluster2_key") is None


# ---------------------------------------------------------------------------
# Two clusters, one shared config, one proxy per cluster


def two_clusters(one: Memcached, two: Memcached) -> dict[str, Any]:
    return {
        "pools": {"one": {"servers": [one.address]}, "two": {"servers": [two.address]}},
        "routes": [
            {"aliases": ["/dc/one/"], "route": "PoolRoute|one"},
            {"aliases": ["/dc/two/"], "route": "PoolRoute|two"},
        ],
    }


def test_two_clusters_local_remote_and_broadcast_delete(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    one, two = memcached_factory(), memcached_factory()
    config = two_clusters(one, two)
    near_one = proxy_factory(config, "-R", "/dc/one/")
    near_two = proxy_factory(config, "-R", "/dc/two/")
    with connect(near_one.port) as first, connect(near_two.port) as second:
        # -R picks each proxy's local cluster for keys without a prefix.
        assert first.call(b"set k 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert second.call(b"set k 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert (value_of(one, b"k"), value_of(two, b"k")) == (b"1", b"2")
        # A prefix reaches the other cluster.
        assert (
            first.call(b"get /dc/two/k\r\n", b"END\r\n") == b"VALUE /dc/two/k 0 1\r\n2\r\nEND\r\n"
        )
        # /*/*/ deletes everywhere; the reply is the local cluster's.
        assert first.call(b"delete /*/*/k\r\n") == b"DELETED\r\n"
        assert poll(lambda: value_of(one, b"k") is None and value_of(two, b"k") is None)
        assert first.call(b"delete /*/*/k\r\n") == b"NOT_FOUND\r\n"
        # An unknown cluster has no route...
        assert first.call(b"get /elsewhere/x/k\r\n") == b"SERVER_ERROR RootRoute: No rh found\r\n"


def test_send_invalid_route_to_default(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    one, two = memcached_factory(), memcached_factory()
    proxy = proxy_factory(
        two_clusters(one, two), "-R", "/dc/two/", "--send-invalid-route-to-default"
    )
    with connect(proxy.port) as client:
        assert client.call(b"set /elsewhere/x/k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"get /elsewhere/x/k\r\n", b"END\r\n") == (
            b"VALUE /elsewhere/x/k 0 1\r\nv\r\nEND\r\n"
        )
    assert (value_of(one, b"k"), value_of(two, b"k")) == (None, b"v")


def test_a_default_route_that_is_no_alias_stops_the_proxy(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"routes": {"/a/a/": "NullRoute"}}))
    result = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "-f", str(path), "-R", "/b/b/",
         "--validate-config"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert "invalid default route: /b/b/ @ $.routes" in result.stderr


# ---------------------------------------------------------------------------
# examples/multi-cluster: what its README promises

EXAMPLE = Path(__file__).parent.parent / "examples" / "multi-cluster" / "config.json"


def test_the_multi_cluster_example_routes_as_its_readme_says(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    names = ["east.web.1", "east.web.2", "east.api", "east.gutter", "west.web.1", "west.web.2",
             "west.gutter"]  # fmt: skip
    servers = {name: memcached_factory() for name in names}
    text = EXAMPLE.read_text()
    for index, server in enumerate(servers.values()):
        text = re.sub(rf"\b{21231 + index}\b", str(server.port), text)
    proxy = proxy_factory(text, "-R", "/east/web/")

    def holders(key: bytes) -> set[str]:
        return {name for name, server in servers.items() if value_of(server, key) is not None}

    with connect(proxy.port) as client:
        for key in (b"a", b"b", b"c", b"d"):  # enough keys to land on both east.web servers
            assert client.call(b"set " + key + b" 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert set().union(*(holders(key) for key in b"abcd".split())) <= {
            "east.web.1",
            "east.web.2",
        }
        assert client.call(b"set /west/web/w 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert holders(b"w") <= {"west.web.1", "west.web.2"} and holders(b"w")
        assert client.call(b"set /west/other/f 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert holders(b"f") <= {"west.web.1", "west.web.2"} and holders(b"f")
        assert client.call(b"get /north/web/a\r\n") == b"SERVER_ERROR RootRoute: No rh found\r\n"

        # A copy in every cluster and both gutters, then one delete for all of them.
        for name in ("east.gutter", "west.gutter"):
            with connect(servers[name].port) as direct:
                assert direct.call(b"set x 0 0 1\r\nv\r\n") == b"STORED\r\n"
        for prefix in (b"", b"/east/api/", b"/west/web/"):
            assert client.call(b"set " + prefix + b"x 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert len(holders(b"x")) == 5
        assert client.call(b"delete /*/*/x\r\n") == b"DELETED\r\n"
        assert poll(lambda: holders(b"x") == set())


def test_pool_server_errors_route_slots_hold_their_place(
    memcached_factory: MemcachedFactory, proxy_factory: ProxyFactory
) -> None:
    """test_mcrouter.py TestPoolServerErrors: an ErrorRoute in a pool's `servers` keeps
    its slot, so the keys hashing to it get its error and the others reach their servers.
    """
    mc1, mc3 = memcached_factory(), memcached_factory()  # the ErrorRoute is "mc2"
    proxy = proxy_factory(mcrouter_config("test_pool_server_errors", [mc1, mc3]), "-R", "/a/a/")
    with connect(proxy.port) as client:
        # Pool|A is its one slot, the ErrorRoute.
        assert client.call(b"get test\r\n", b"\r\n").startswith(b"SERVER_ERROR")
        # One destination per server; the route slot has none.
        servers = [
            line for line in client.call(b"stats servers\r\n", b"END\r\n").split(b"\r\n")
            if line.startswith(b"STAT ")
        ]  # fmt: skip
        assert len(servers) == 2
        # HashRoute|Pool|B: Ch3 over three slots, the ErrorRoute in the middle one.
        assert client.call(b"set /b/b/abc 0 0 6\r\nvalueA\r\n") == b"STORED\r\n"
        assert value_of(mc1, b"abc") == b"valueA"
        assert client.call(b"set /b/b/a 0 0 6\r\nvalueB\r\n").startswith(b"SERVER_ERROR")
        assert value_of(mc1, b"a") is None
        assert value_of(mc3, b"a") is None
        assert client.call(b"set /b/b/ab 0 0 6\r\nvalueC\r\n") == b"STORED\r\n"
        assert value_of(mc3, b"ab") == b"valueC"
