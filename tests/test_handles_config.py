"""The new handles from config text: every form loads, bad values name their JSON path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing._spooky import spooky_hash32, spooky_hash64
from mcrouter_trio.routing import REGISTRY, load_handles
from mcrouter_trio.routing._registry import REFUSED
from mcrouter_trio.routing.handles.broadcast import AllFastestRoute
from mcrouter_trio.routing.handles.failover import FailoverRoute, FailoverWithExptimeRoute
from mcrouter_trio.routing.handles.modify import ModifyExptimeRoute
from mcrouter_trio.routing.handles.simple import ErrorRoute, LoggingRoute


def config(route: object) -> str:
    return json.dumps({"pools": {"A": {"servers": ["127.0.0.1:1", "127.0.0.1:2"]}}, "route": route})


LOADS = [
    "AllAsyncRoute|Pool|A",
    "AllInitialRoute|Pool|A",
    "AllFastestRoute|Pool|A",
    "AllMajorityRoute|Pool|A",
    "MissFailoverRoute|Pool|A",
    "HostIdRoute|Pool|A",
    "DevNullRoute",
    "LoggingRoute|PoolRoute|A",
    {"type": "FailoverRoute", "children": "Pool|A", "failover_errors": ["timeout", "tko"],
     "failover_limit": {"rate": 0.1, "burst": 10},
     "failover_policy": {"type": "LeastFailuresPolicy", "max_tries": 2}, "failover_tag": True},
    {"type": "FailoverRoute", "children": "Pool|A", "enable_lease_pairing": True, "name": "F"},
    {"type": "FailoverRoute", "children": "Pool|A", "enable_lease_pairing": False},
    {"type": "FailoverWithExptimeRoute", "normal": "PoolRoute|A", "failover": ["Pool|A"],
     "failover_exptime": 30, "failover_errors": {"gets": ["timeout"]}},
    {"type": "SaltedFailoverRoute", "pool": "A", "hash": "Crc32",
     "failover_policy": {"type": "DeterministicOrderPolicy", "max_tries": 2,
                         "max_error_tries": 2}},
    {"type": "MissFailoverRoute", "children": "Pool|A", "return_best_on_error": True},
    {"type": "ModifyKeyRoute", "target": "PoolRoute|A", "set_routing_prefix": "/a/b/",
     "ensure_key_prefix": "p:", "replace_key_prefix": "q:", "set_key_suffix": ":s"},
    {"type": "ModifyExptimeRoute", "target": "PoolRoute|A", "exptime": 5, "action": "min"},
    {"type": "ErrorRoute", "response": "no", "result": "mc_res_busy", "enable_logging": False},
    {"type": "HostIdRoute", "children": "Pool|A", "salt": "x"},
    {"type": "LatencyInjectionRoute", "child": "PoolRoute|A", "before_latency_ms": 1,
     "after_latency_ms": 2, "total_latency_ms": 3},
    {"type": "LatencyInjectionRoute", "child": "PoolRoute|A",
     "total_latency_percentile_ms": [[50, 1], [99.9, 5]], "request_payload_latency": True,
     "max_request_latency_us": 100},
    {"type": "LatencyInjectionRoute", "child": "PoolRoute|A", "before_latency_ms": 0},
    {"type": "RoutingGroupRoute", "default_policy": "PoolRoute|A",
     "routing_group_policies": {"get_like": "AllFastestRoute|Pool|A"}},
]  # fmt: skip


@pytest.mark.parametrize("route", LOADS, ids=lambda route: json.dumps(route)[:60])
def test_loads(route: object) -> None:
    loaded = load_config(config(route))
    assert loaded.route is not None
    assert {server.address for server in loaded.servers} <= {"127.0.0.1:1", "127.0.0.1:2"}


def test_loaded_values() -> None:
    fastest = load_config(config("AllFastestRoute|Pool|A")).route
    assert isinstance(fastest, AllFastestRoute) and len(fastest.children) == 2
    error = load_config(config("ErrorRoute|reject")).route
    assert isinstance(error, ErrorRoute) and error.response == "reject"
    logging_route = load_config(config("LoggingRoute")).route
    assert isinstance(logging_route, LoggingRoute) and logging_route.target is None
    with_exptime = load_config(
        config({"type": "FailoverWithExptimeRoute", "normal": "PoolRoute|A", "failover": "Pool|A"})
    ).route
    assert isinstance(with_exptime, FailoverWithExptimeRoute)
    assert with_exptime.failover_exptime == 60
    wrapped = with_exptime.targets()[1]
    assert isinstance(wrapped, ModifyExptimeRoute)
    assert (wrapped.exptime, wrapped.action) == (60, "min")
    failover = load_config(
        config({"type": "FailoverRoute", "children": "Pool|A", "failover_errors": []})
    ).route
    assert isinstance(failover, FailoverRoute) and failover.failover_errors is not None
    named = load_config(
        json.dumps(
            {
                "pools": {"A": {"servers": ["127.0.0.1:1"]}},
                "named_handles": [
                    {
                        "type": "FailoverRoute",
                        "name": "paired",
                        "children": "Pool|A",
                        "enable_lease_pairing": True,
                    }
                ],
                "route": {"type": "AllSyncRoute", "children": ["paired", "paired"]},
            }
        )
    ).route
    assert named is not None
    first, second = named.targets()
    assert first is second and isinstance(first, FailoverRoute)
    assert (first.name, first.enable_lease_pairing) == ("paired", True)


REFUSALS = [
    (
        {"type": "FailoverRoute", "children": "Pool|A", "enable_lease_pairing": True},
        "name is required when lease pairing is enabled @ $.route",
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A", "enable_lease_pairing": "yes",
         "name": "F"},
        'expected true or false, got "yes" @ $.route.enable_lease_pairing',
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A", "name": 7},
        "expected a string, got 7 @ $.route.name",
    ),
    ("SRRoute|pool", "SRRoute exists only inside Meta and is not supported @ $.route"),
    (
        {"type": "AllSyncRoute", "children": ["PoolRoute|A", {"type": "AxonLogRoute"}]},
        "AxonLogRoute exists only inside Meta and is not supported @ $.route.children[1]",
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A", "failover_errors": ["timeout", "nope"]},
        "failover error 'nope' is not a valid error type @ $.route.failover_errors",
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A",
         "failover_errors": {"gets": ["timeout"], "sets": []}},
        "unknown key 'sets' (known: gets, updates, deletes) @ $.route.failover_errors",
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A", "failover_limit": {"burst": 3}},
        "rate not found @ $.route.failover_limit",
    ),
    (
        {"type": "FailoverRoute", "children": "Pool|A",
         "failover_policy": {"type": "DeterministicOrderPolicy", "max_tries": 2}},
        "DeterministicOrderPolicy must specify 'max_error_tries' field @ $.route.failover_policy",
    ),
    (
        {"type": "FailoverWithExptimeRoute", "failover": "Pool|A"},
        "required field missing @ $.route.normal",
    ),
    (
        {"type": "ModifyExptimeRoute", "target": "PoolRoute|A", "exptime": 1, "action": "max"},
        "action should be 'set' or 'min' @ $.route.action",
    ),
    (
        {"type": "ModifyExptimeRoute", "target": "PoolRoute|A"},
        "required field missing @ $.route.exptime",
    ),
    (
        {"type": "ModifyKeyRoute", "target": "PoolRoute|A", "set_routing_prefix": "/a/"},
        "set_routing_prefix: '/a/' is not a routing prefix ('/region/cluster/')"
        " @ $.route.set_routing_prefix",
    ),
    (
        {"type": "ModifyKeyRoute", "target": "PoolRoute|A", "ensure_key_prefix": "a b"},
        "invalid key prefix 'a b', invalid key: space or control character"
        " @ $.route.ensure_key_prefix",
    ),
    (
        {"type": "ModifyKeyRoute", "target": "PoolRoute|A", "replace_key_prefix": "a",
         "modify_inplace": True},
        "replace_key_prefix and modify_inplace cannot be used together @ $.route",
    ),
    (
        {"type": "ErrorRoute", "result": "mc_res_found"},
        "result mc_res_found is not a valid error result @ $.route.result",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A"},
        "must specify either 'before_latency_ms', 'after_latency_ms', 'total_latency_ms',"
        " 'total_latency_percentile_ms' or 'request_payload_latency' @ $.route",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A", "before_latency_ms": 1.5},
        "expected an integer, got 1.5 @ $.route.before_latency_ms",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A",
         "total_latency_percentile_ms": [[50, 10], [50, 20]]},
        "[1]: percentiles must be strictly increasing @ $.route.total_latency_percentile_ms",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A",
         "total_latency_percentile_ms": [[0, 10]]},
        "[0]: percentile must be in (0, 100], got 0 @ $.route.total_latency_percentile_ms",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A",
         "total_latency_percentile_ms": [[10, -1]]},
        "[0]: latency_ms must be non-negative, got -1 @ $.route.total_latency_percentile_ms",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A",
         "total_latency_percentile_ms": [10]},
        "[0]: expected a [percentile, latency_ms] array @ $.route.total_latency_percentile_ms",
    ),
    (
        {"type": "LatencyInjectionRoute", "child": "PoolRoute|A", "request_payload_latency": 1},
        "expected true or false, got 1 @ $.route.request_payload_latency",
    ),
    (
        {"type": "RoutingGroupRoute", "routing_group_policies": {"get": "PoolRoute|A"}},
        "get is not a valid routing group @ $.route.routing_group_policies.get",
    ),
    (
        {"type": "RoutingGroupRoute"},
        "needs either 'default_policy' or 'routing_group_policies' @ $.route",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("route", "message"), REFUSALS, ids=lambda value: str(value)[:50])
def test_refused(route: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(route))
    assert str(raised.value) == f"<config>: {message}"


def test_meta_only_names_are_refused_not_registered() -> None:
    load_handles()
    for name in ("SRRoute", "AxonLogRoute", "CarbonLookasideRoute", "McRefillRoute"):
        assert name in REFUSED and name not in REGISTRY


def test_every_config_example_in_the_routes_doc_loads() -> None:
    text = (Path(__file__).parent.parent / "docs" / "routes.md").read_text()
    examples = re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    assert len(examples) == 17
    for example in examples:
        assert load_config(example).route is not None


def _with_domains(domains: object, servers: int = 4) -> str:
    pool = {"servers": [f"127.0.0.1:{port}" for port in range(1, servers + 1)],
            "failure_domains": domains}  # fmt: skip
    return json.dumps({"pools": {"A": pool}, "route": "PoolRoute|A"})


def test_pool_failure_domains_are_read_as_mcrouter_reads_them() -> None:
    pool = load_config(_with_domains([3, "rack-a", None, -1])).pools["A"]
    assert [server.failure_domain for server in pool.servers] == [
        3, spooky_hash32(b"rack-a"), 0, 0xFFFF_FFFF]  # fmt: skip
    # Folly's SpookyHashV2::Hash32 with seed 0 is the low half of Hash64.
    assert spooky_hash32(b"rack-a") == spooky_hash64(b"rack-a") & 0xFFFF_FFFF


@pytest.mark.parametrize(
    ("domains", "message"),
    [
        ("rack", "failure_domains is not an array @ $.pools.A.failure_domains"),
        ([1, 2], "failure_domains expected to be of the same size as servers, expected 4,"
                 " got 2 @ $.pools.A.failure_domains"),
    ],
)  # fmt: skip
def test_bad_pool_failure_domains(domains: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(_with_domains(domains))
    assert str(raised.value) == f"<config>: {message}"
