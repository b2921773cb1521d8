"""Tests for the config loader: mcrouter JSON in, route trees and exact errors out."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from handle_helpers import TIMEOUT as TIMEOUT_REPLY
from handle_helpers import request
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrouter_trio.config import (
    ConfigError,
    PoolSpec,
    ProxyConfig,
    ServerSpec,
    load_config,
    load_config_file,
    loads_jsonc,
    parse_server,
)
from mcrouter_trio.routing import Route
from mcrouter_trio.routing.handles.broadcast import AllSyncRoute
from mcrouter_trio.routing.handles.destination import DestinationRoute, pool_destinations
from mcrouter_trio.routing.handles.failover import FailoverRoute, LatestRoute
from mcrouter_trio.routing.handles.hash import HashRoute, HashSpec, PoolRoute
from mcrouter_trio.routing.handles.selector import OperationSelectorRoute
from mcrouter_trio.routing.handles.simple import ErrorRoute, NullRoute, RandomRoute
from mcrouter_trio.routing.handles.warmup import WarmUpRoute
from mcrouter_trio.routing.testing import FakeContext

# The three configs of /work/shared/seeds/000_ae7eae68b57f8e58.txt, copied
# verbatim (blank lines, `//` comments and trailing commas included).

#: Section 4.2.2: a replicated pool behind PrefixPolicyRoute.
SEED_4_2_2 = """\
{

"pools": {

"A": {

"servers": [

// hosts of replicated pool, e.g.:

"192.168.75.131:11211",

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

#: Section 5.3.2: RandomRoute over two pools.
SEED_5_3_2 = """\
{

"pools": {

"backup": { "servers": [

"192.168.75.131:11210",

"192.168.75.131:11211",

"192.168.75.131:11212",

] },

"localhost": { "servers": [

"127.0.0.1:11210",

"127.0.0.1:11211",

"127.0.0.1:11212",

] }

},

"route": {

"type": "RandomRoute",

"children" : [ "PoolRoute|localhost", "PoolRoute|backup" ]

}

}
"""

#: Section 5.4.2: WarmUpRoute for gets, AllSyncRoute for everything else.
SEED_5_4_2 = """\
{

"pools": {

"backup": { "servers": [

"192.168.75.131:11210",

"192.168.75.131:11211",

"192.168.75.131:11212",

] },

"localhost": { "servers": [

"127.0.0.1:11210",

"127.0.0.1:11211",

"127.0.0.1:11212",

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

SEED_FILE = Path("/work/shared/seeds/000_ae7eae68b57f8e58.txt")

A_B_POOLS = {
    "A": {"servers": ["a1:11211", "a2:11211"]},
    "B": {"servers": ["b1:11211"]},
}


def config(route: Any, pools: Any = None, **top: Any) -> str:
    """Config text for a route over pools A (two servers) and B (one)."""
    return json.dumps({"pools": A_B_POOLS if pools is None else pools, "route": route, **top})


def errors_of(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text, **kwargs)
    return info.value.errors


def pool_names(routes: Sequence[Route]) -> list[str]:
    names = []
    for route in routes:
        assert isinstance(route, PoolRoute)
        names.append(route.pool.name)
    return names


def addresses(routes: Sequence[Route]) -> list[str]:
    found = []
    for route in routes:
        assert isinstance(route, DestinationRoute)
        found.append(route.server.address)
    return found


# ---------------------------------------------------------------------------
# The seed configs


@pytest.mark.skipif(not SEED_FILE.exists(), reason="seed document not available")
@pytest.mark.parametrize("seed", [SEED_4_2_2, SEED_5_3_2, SEED_5_4_2])
def test_seed_copies_are_verbatim(seed: str) -> None:
    assert seed in SEED_FILE.read_text(encoding="utf-8")


def test_seed_4_2_2_prefix_policy_route() -> None:
    loaded = load_config(SEED_4_2_2, host_id=7)
    route = loaded.route
    assert isinstance(route, OperationSelectorRoute)
    assert route.default_policy is None
    assert list(route.operation_policies) == ["delete", "add", "get", "set"]
    for op in ("delete", "add", "set"):
        policy = route.operation_policies[op]
        assert isinstance(policy, AllSyncRoute)
        assert addresses(policy.children) == ["192.168.75.131:11211"]
    latest = route.operation_policies["get"]
    assert isinstance(latest, LatestRoute)
    assert latest.host_id == 7
    assert latest.failover_count == 5
    assert addresses(latest.children) == ["192.168.75.131:11211"]
    assert list(loaded.pools) == ["A"]
    assert loaded.servers == {ServerSpec("192.168.75.131", 11211)}
    assert loaded.md5 == hashlib.md5(SEED_4_2_2.encode()).hexdigest()


def test_seed_5_3_2_random_route() -> None:
    loaded = load_config(SEED_5_3_2)
    route = loaded.route
    assert isinstance(route, RandomRoute)
    assert pool_names(route.targets()) == ["localhost", "backup"]
    assert sorted(loaded.pools) == ["backup", "localhost"]
    localhost = loaded.pools["localhost"]
    assert [(s.host, s.port) for s in localhost.servers] == [
        ("127.0.0.1", 11210),
        ("127.0.0.1", 11211),
        ("127.0.0.1", 11212),
    ]
    assert [s.address for s in loaded.pools["backup"].servers] == [
        "192.168.75.131:11210",
        "192.168.75.131:11211",
        "192.168.75.131:11212",
    ]
    assert loaded.servers == set(localhost.servers) | set(loaded.pools["backup"].servers)
    assert len(loaded.servers) == 6


def test_seed_5_4_2_warm_up_route() -> None:
    loaded = load_config(SEED_5_4_2)
    route = loaded.route
    assert isinstance(route, OperationSelectorRoute)
    assert list(route.operation_policies) == ["get"]
    warm_up = route.operation_policies["get"]
    assert isinstance(warm_up, WarmUpRoute)
    assert pool_names([warm_up.cold, warm_up.warm]) == ["localhost", "backup"]
    assert warm_up.exptime == 0
    default = route.default_policy
    assert isinstance(default, AllSyncRoute)
    assert pool_names(default.targets()) == ["localhost", "backup"]
    assert len(loaded.servers) == 6


# ---------------------------------------------------------------------------
# JSON with comments and trailing commas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, // one\n"b": 2}', {"a": 1, "b": 2}),
        ('{"a": /* inline */ 1}', {"a": 1}),
        ('{"a": /* several\nlines */ 1}', {"a": 1}),
        ("[1, 2, 3,]", [1, 2, 3]),
        ('{"a": [1,], "b": {"c": 2,},}', {"a": [1], "b": {"c": 2}}),
        ("[1, // trailing comma, then a comment\n]", [1]),
        ("[1, /* c */ ]", [1]),
        ('"// not a comment"', "// not a comment"),
        ('"/* not a comment */"', "/* not a comment */"),
        ('["a,]", "b,}",]', ["a,]", "b,}"]),
        ('["quote \\" // still a string"]', ['quote " // still a string']),
        ('"back\\\\" // a comment after an escaped backslash', "back\\"),
        ("1 / 2", None),  # a lone slash is left for json to reject
    ],
)
def test_loads_jsonc(text: str, expected: Any) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            loads_jsonc(text)
    else:
        assert loads_jsonc(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', "invalid JSON: Expecting ',' delimiter at line 3 column 3"),
        # Blanked comments keep columns: the error points into the original text.
        ('{"a": /* c */ nope}', "invalid JSON: Expecting value at line 1 column 15"),
        ("[1,,]", "invalid JSON: Expecting value at line 1 column 4"),
        ("[,]", "invalid JSON: Expecting value at line 1 column 2"),
        (
            '{\n"a": 1 /* never closed\n}',
            "invalid JSON: unterminated /* comment at line 2 column 8",
        ),
        ("", "invalid JSON: Expecting value at line 1 column 1"),
    ],
)
def test_loads_jsonc_syntax_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_jsonc(text, source="x.json")
    assert info.value.errors == [error]
    assert str(info.value) == f"x.json: {error}"


_COMMENT_TEXT = st.text(alphabet='ab "/,]}*', max_size=8)
_GAPS = st.one_of(
    st.sampled_from(["", " ", "\n", "\t"]),
    _COMMENT_TEXT.map(lambda text: f"//{text}\n"),
    _COMMENT_TEXT.filter(lambda text: "*/" not in text).map(lambda text: f"/*{text}*/"),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='ab/*,]}"\\\n', max_size=8)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='ab/*,"', max_size=4), inner, max_size=4)
    ),
    max_leaves=15,
)


def _render(value: Any, data: st.DataObject) -> str:
    """`value` as JSON with comments, whitespace and trailing commas sprinkled in."""

    def gap() -> str:
        return data.draw(_GAPS)

    if isinstance(value, list):
        items = [gap() + _render(item, data) + gap() for item in value]
    elif isinstance(value, dict):
        items = [
            f"{gap()}{json.dumps(key)}{gap()}:{gap()}{_render(item, data)}{gap()}"
            for key, item in value.items()
        ]
    else:
        return json.dumps(value)
    trailing = "," + gap() if bool(items) and data.draw(st.booleans()) else ""
    opening, closing = ("[", "]") if isinstance(value, list) else ("{", "}")
    return opening + gap() + ",".join(items) + trailing + closing


@settings(max_examples=300)
@given(value=_JSON, data=st.data())
def test_loads_jsonc_matches_json_loads(value: Any, data: st.DataObject) -> None:
    noisy = data.draw(_GAPS) + _render(value, data) + data.draw(_GAPS)
    assert loads_jsonc(noisy) == json.loads(json.dumps(value))


# ---------------------------------------------------------------------------
# Route forms


def test_short_string_forms() -> None:
    def build(route: Any) -> Route:
        return load_config(config(route)).route

    pool_route = build("PoolRoute|A")
    assert isinstance(pool_route, PoolRoute)
    assert pool_route.pool.name == "A"
    assert pool_route.hash == HashSpec()
    for text, cls in [
        ("AllSyncRoute|Pool|A", AllSyncRoute),
        ("HashRoute|Pool|A", HashRoute),
        ("FailoverRoute|Pool|A", FailoverRoute),
        ("RandomRoute|Pool|A", RandomRoute),
        ("LatestRoute|Pool|A", LatestRoute),
    ]:
        route = build(text)
        assert isinstance(route, cls), text
        assert sorted(addresses(route.targets())) == ["a1:11211", "a2:11211"], text
    assert build("AllSyncRoute|PoolRoute|B") == AllSyncRoute((build("PoolRoute|B"),))
    assert build("NullRoute") == NullRoute()
    assert build("ErrorRoute") == ErrorRoute()
    assert build("ErrorRoute|go away") == ErrorRoute("go away")
    assert build("ErrorRoute|a|b") == ErrorRoute("a|b")  # split at the first `|` only
    assert build("OperationSelectorRoute|NullRoute") == NullRoute()


@pytest.mark.parametrize(
    ("children", "expected"),
    [
        # (children JSON, the children as "type:detail" strings)
        ("Pool|A", ["dest:a1:11211", "dest:a2:11211"]),
        (["Pool|A", "PoolRoute|B"], ["dest:a1:11211", "dest:a2:11211", "pool:B"]),
        ([["Pool|B"], [], "", "NullRoute"], ["dest:b1:11211", "null"]),
        ({"type": "PoolRoute", "pool": "A"}, ["pool:A"]),
        ("NullRoute", ["null"]),
        ("", []),
        (
            [{"type": "Pool", "name": "C", "servers": ["c1:1", "c2:2"]}, "Pool|C"],
            ["dest:c1:1", "dest:c2:2", "dest:c1:1", "dest:c2:2"],
        ),
        ([{"type": "Pool", "name": "A"}], ["dest:a1:11211", "dest:a2:11211"]),
        ([{"type": "ErrorRoute", "response": "x"}], ["error:x"]),
    ],
)
def test_children_forms(children: Any, expected: list[str]) -> None:
    route = load_config(config({"type": "FailoverRoute", "children": children})).route
    assert isinstance(route, FailoverRoute)
    assert [_summary(child) for child in route.children] == expected


def _summary(route: Route) -> str:
    if isinstance(route, DestinationRoute):
        return f"dest:{route.server.address}"
    if isinstance(route, PoolRoute):
        return f"pool:{route.pool.name}"
    if isinstance(route, ErrorRoute):
        return f"error:{route.response}"
    if isinstance(route, NullRoute):
        return "null"
    raise AssertionError(route)


def test_object_forms() -> None:
    route = load_config(
        config(
            {
                "type": "PrefixPolicyRoute",
                "operation_policies": {
                    "get": {
                        "type": "HashRoute",
                        "children": "Pool|A",
                        "hash_func": "Crc32",
                        "salt": "s",
                        "weights": [1, 0.5],
                    },
                    "set": {"type": "PoolRoute", "pool": "B", "hash": "WeightedCh3"},
                    "delete": {
                        "type": "PoolRoute",
                        "pool": {"name": "D", "servers": ["d:1"], "server_timeout": 50},
                        "hash": {"hash_func": "Ch3", "salt": "x"},
                    },
                    "lease-get": {"type": "LatestRoute", "children": "Pool|A", "failover_count": 1},
                },
                "default_policy": {
                    "type": "WarmUpRoute",
                    "cold": "PoolRoute|A",
                    "warm": {"type": "NullRoute", "name": "named handles are accepted"},
                    "exptime": 20000,
                },
            }
        )
    ).route
    assert isinstance(route, OperationSelectorRoute)
    get = route.operation_policies["get"]
    assert isinstance(get, HashRoute)
    assert (get.hash_func, get.salt, get.weights) == ("Crc32", "s", (1.0, 0.5))
    assert len(get.children) == 2
    set_ = route.operation_policies["set"]
    assert isinstance(set_, PoolRoute)
    assert set_.hash == HashSpec("WeightedCh3")
    delete = route.operation_policies["delete"]
    assert isinstance(delete, PoolRoute)
    assert delete.pool == PoolSpec("D", (ServerSpec("d", 1, timeout_ms=50, connect_timeout_ms=50),))
    assert delete.hash == HashSpec("Ch3", "x")
    latest = route.operation_policies["lease-get"]
    assert isinstance(latest, LatestRoute)
    assert latest.failover_count == 1
    assert len(latest.targets()) == 1
    warm_up = route.default_policy
    assert isinstance(warm_up, WarmUpRoute)
    assert (warm_up.exptime, warm_up.warm) == (20000, NullRoute())


def test_unknown_top_level_keys_are_ignored() -> None:
    text = config("NullRoute", routing_options={"enable_global_big_value_route": True}, x=1)
    assert load_config(text).route == NullRoute()


def test_inline_pools_are_listed() -> None:
    loaded = load_config(
        config({"type": "AllSyncRoute", "children": [{"type": "Pool", "name": "C", "servers": []}]})
    )
    assert sorted(loaded.pools) == ["A", "B", "C"]
    assert loaded.pools["C"] == PoolSpec("C", ())


# ---------------------------------------------------------------------------
# Servers and pools


@pytest.mark.parametrize(
    ("text", "host", "port", "mech"),
    [
        ("localhost:11211", "localhost", 11211, "plain"),
        ("10.0.0.1:1", "10.0.0.1", 1, "plain"),
        ("mc-1.example.com:65535:ascii", "mc-1.example.com", 65535, "plain"),
        ("h:5:ascii:ssl", "h", 5, "ssl"),
        ("h:5:ascii:plain:notcompressed", "h", 5, "plain"),
        ("[::1]:5000", "::1", 5000, "plain"),
        ("[fe80::1:2]:11211:ascii:ssl:compressed", "fe80::1:2", 11211, "ssl"),
    ],
)
def test_parse_server(text: str, host: str, port: int, mech: str) -> None:
    server = parse_server(text, timeout_ms=10, connect_timeout_ms=20)
    assert server == ServerSpec(host, port, "ascii", mech, 10, 20)


def test_parse_server_defaults() -> None:
    server = parse_server(
        "[::1]:5000", timeout_ms=1, connect_timeout_ms=2, default_mech="ssl", server_name="mc"
    )
    assert server == ServerSpec("::1", 5000, "ascii", "ssl", 1, 2, "mc")
    assert server.address == "[::1]:5000"
    explicit = parse_server(
        "h:1:ascii:plain", timeout_ms=1, connect_timeout_ms=1, default_mech="ssl"
    )
    assert explicit.mech == "plain"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("localhost", "missing port"),
        ("localhost:", "missing port"),
        (":11211", "missing host"),
        ("h:65536", "port must be 0..65535, got '65536'"),
        ("h:http", "port must be 0..65535, got 'http'"),
        ("h:+1", "port must be 0..65535, got '+1'"),
        (
            "h:1:caret",
            "protocol 'caret' is not supported: mcrouter's own binary protocol, not memcached's",
        ),
        ("h:1:thrift", "protocol 'thrift' is not supported: Meta-only Thrift transport"),
        ("h:1:ASCII", "unknown protocol 'ASCII'"),
        ("h:1:ascii:fizz", "security mech 'fizz' is not supported; use 'ssl'"),
        ("h:1:ascii:tls", "unknown security mech 'tls'"),
        ("h:1:ascii:plain:zstd", "unknown compression 'zstd'"),
        ("h:1:ascii:plain:compressed:x", "too many ':' fields"),
        ("::1:5000", "IPv6 addresses must be in brackets, e.g. '[::1]:11211'"),
        ("[::1]", "missing port"),
        ("[::1:5000", "missing ']'"),
        ("[]:1", "missing host"),
        ("[bad host]:1", "invalid host 'bad host'"),
        ("[::1]5000", "expected ':' after ']'"),
        ("bad host:1", "invalid host 'bad host'"),
        ("unix:/tmp/mc.sock", "unix sockets are not supported"),
    ],
)
def test_parse_server_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_server(text, timeout_ms=1, connect_timeout_ms=1)
    assert str(info.value) == f"invalid server '{text}' ({reason})"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("[localhost]:11132", "localhost", 11132),  # brackets around a host name, as mcrouter
        ("[127.0.0.1]:7", "127.0.0.1", 7),
        ("h:0", "h", 0),  # mcrouter accepts port 0 (connecting to it fails)
    ],
)
def test_parse_server_as_mcrouter_does(text: str, host: str, port: int) -> None:
    server = parse_server(text, timeout_ms=1, connect_timeout_ms=1)
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize(
    ("servers", "ports"),
    [(["h", "h:1", "h:x:ascii"], [9, 9, 9]), (["h:1"], [9])],
)
def test_port_override_replaces_every_port(servers: list[str], ports: list[int]) -> None:
    loaded = load_config(config("PoolRoute|P", {"P": {"servers": servers, "port_override": 9}}))
    assert [server.port for server in loaded.pools["P"].servers] == ports


@pytest.mark.parametrize(
    ("route", "kind", "servers"),
    [
        ("Pool|B", DestinationRoute, ["b1:11211"]),
        (["PoolRoute|B"], PoolRoute, ["b1:11211"]),
        ({"type": "Pool", "name": "N", "servers": ["n:1"]}, DestinationRoute, ["n:1"]),
    ],
    ids=["one-server-pool", "one-route-array", "one-server-inline-pool"],
)
def test_a_list_of_one_route_is_that_route(route: object, kind: type, servers: list[str]) -> None:
    # mcrouter builds every route as a list and takes its only element.
    loaded = load_config(config(route))
    assert type(loaded.route) is kind
    assert [server.address for server in loaded.servers] == servers


def _server(pool: dict[str, Any], **kwargs: Any) -> ServerSpec:
    """The single server of pool P configured as `pool`."""
    loaded = load_config(config("PoolRoute|P", {"P": pool}), **kwargs)
    (server,) = loaded.servers
    return server


@pytest.mark.parametrize(
    ("pool", "kwargs", "mech"),
    [
        ({"servers": ["h:1"]}, {}, "plain"),
        ({"servers": ["h:1"], "use_ssl": True}, {}, "ssl"),
        ({"servers": ["h:1"], "use_ssl": False}, {}, "plain"),
        ({"servers": ["h:1"], "security_mech": "ssl"}, {}, "ssl"),
        ({"servers": ["h:1"], "use_ssl": True, "security_mech": "plain"}, {}, "plain"),
        ({"servers": ["h:1:ascii:ssl"]}, {}, "ssl"),
        ({"servers": ["h:1:ascii:plain"], "use_ssl": True}, {}, "plain"),
        ({"servers": ["h:1"]}, {"default_mech": "ssl"}, "ssl"),
        ({"servers": ["h:1"], "security_mech": "plain"}, {"default_mech": "ssl"}, "plain"),
    ],
)
def test_security_mech(pool: dict[str, Any], kwargs: dict[str, Any], mech: str) -> None:
    assert _server(pool, **kwargs).mech == mech


@pytest.mark.parametrize(
    ("pool", "kwargs", "timeouts"),
    [
        ({"servers": ["h:1"]}, {}, (1000, 1000)),
        ({"servers": ["h:1"]}, {"default_timeout_ms": 250}, (250, 250)),
        ({"servers": ["h:1"], "server_timeout": 80}, {}, (80, 80)),
        ({"servers": ["h:1"], "server_timeout": 80, "connect_timeout": 3000}, {}, (80, 3000)),
        ({"servers": ["h:1"], "connect_timeout": 5}, {"default_timeout_ms": 250}, (250, 5)),
    ],
)
def test_timeouts(pool: dict[str, Any], kwargs: dict[str, Any], timeouts: tuple[int, int]) -> None:
    server = _server(pool, **kwargs)
    assert (server.timeout_ms, server.connect_timeout_ms) == timeouts


def test_pool_fields() -> None:
    pools = {
        "base": {
            "servers": ["h:1", "h:2"],
            "server_timeout": 30,
            "keep_routing_prefix": True,
            "weights": [0.5, 1],
            "protocol": "ASCII",
            "server_name": "cache.internal",
        },
        "child": {"inherit": "base", "servers": ["c:1"]},
        "grandchild": {"inherit": "child", "server_timeout": 40},
    }
    loaded = load_config(config("PoolRoute|grandchild", pools))
    base, child, grandchild = (loaded.pools[name] for name in ("base", "child", "grandchild"))
    assert base.keep_routing_prefix is True
    assert base.weights == (0.5, 1.0)
    assert base.servers[0] == ServerSpec("h", 1, "ascii", "plain", 30, 30, "cache.internal")
    assert child == PoolSpec(
        "child", (ServerSpec("c", 1, "ascii", "plain", 30, 30, "cache.internal"),), True, (0.5, 1.0)
    )
    assert grandchild.servers == (ServerSpec("c", 1, "ascii", "plain", 40, 40, "cache.internal"),)
    destinations = loaded.route.targets()
    assert all(isinstance(d, DestinationRoute) and d.keep_routing_prefix for d in destinations)


def test_ignored_pool_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    pool = {"servers": ["h:1"], "region": "r", "cluster": "c", "qos": {"class": 1}}
    with caplog.at_level(logging.WARNING, logger="mcrouter_trio.config"):
        load_config(config("PoolRoute|P", {"P": pool}))
    assert "pool 'P': ignoring unsupported keys: cluster, qos, region" in caplog.messages


def test_servers_are_deduplicated() -> None:
    pools = {
        "A": {"servers": ["h:1", "h:2"]},
        "B": {"servers": ["h:2", "h:3"]},
        "slow": {"servers": ["h:1"], "server_timeout": 5000},
    }
    route = {"type": "AllSyncRoute", "children": ["Pool|A", "Pool|B", "PoolRoute|slow"]}
    loaded = load_config(config(route, pools))
    assert loaded.servers == {
        ServerSpec("h", 1),
        ServerSpec("h", 2),
        ServerSpec("h", 3),
        ServerSpec("h", 1, timeout_ms=5000, connect_timeout_ms=5000),
    }


def test_servers_only_reachable_ones() -> None:
    pools = {"A": {"servers": ["a:1"]}, "unused": {"servers": ["u:1"]}}
    loaded = load_config(config("PoolRoute|A", pools))
    assert loaded.servers == {ServerSpec("a", 1)}
    assert sorted(loaded.pools) == ["A", "unused"]


def test_latest_route_uses_host_id() -> None:
    pools = {"A": {"servers": [f"h:{port}" for port in range(1, 11)]}}
    text = config({"type": "LatestRoute", "children": "Pool|A", "failover_count": 3}, pools)
    chosen = {tuple(load_config(text, host_id=host).servers) for host in range(20)}
    assert all(len(servers) == 3 for servers in chosen)
    assert len(chosen) > 1  # different hosts prefer different servers


@pytest.mark.parametrize(
    ("hash_", "options"),
    [
        pytest.param("Latest", {}, id="name"),
        pytest.param(
            {"hash_func": "Latest", "failover_count": 2, "salt": "s"},
            {"failover_count": 2, "salt": "s"},
            id="object-with-latest-options",
        ),
        pytest.param(
            {"hash_func": "Latest", "weights": [1, 0, 0, 1, 1, 1, 0, 1, 1, 1]},
            {"weights": (1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0)},
            id="weights",
        ),
    ],
)
def test_pool_route_hash_latest_is_latest_route_over_the_pool(
    hash_: object, options: dict[str, Any]
) -> None:
    """mcrouter's PoolRoute passes its hash object to createHashRoute, which builds
    LatestRoute for `Latest` (test_ascii.json): same servers, same order per host."""
    pools = {"A": {"servers": [f"h:{port}" for port in range(1, 11)]}}
    text = config({"type": "PoolRoute", "pool": "A", "hash": hash_}, pools)
    for host in (1, 2, 3):
        loaded = load_config(text, host_id=host)
        pool_route: Any = loaded.route
        latest = LatestRoute(pool_destinations(loaded.pools["A"]), host_id=host, **options)
        assert pool_route.targets()[0].targets() == latest.targets()
        assert len(latest.targets()) == options.get("failover_count", 5)
        ctx = FakeContext(answer=lambda server, request: TIMEOUT_REPLY)
        pool_route.route(request(b"get k\r\n"), ctx)
        tried: Any = latest.targets()
        assert [sent.server for sent in ctx.sent] == [route.server for route in tried]


def test_hash_route_refuses_latest_outside_pool_route() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config({"type": "HashRoute", "children": "Pool|A", "hash_func": "Latest"}))
    assert error.value.errors == [
        "hash function 'Latest' is only available in PoolRoute's 'hash' @ $.route.hash_func"
    ]


def test_proxy_config_is_frozen() -> None:
    loaded = load_config(config("PoolRoute|A"))
    assert isinstance(loaded, ProxyConfig)
    with pytest.raises(TypeError):
        loaded.pools["X"] = PoolSpec("X", ())  # type: ignore[index]


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("route", "warnings"),
    [
        pytest.param(
            {"type": "PoolRoute", "pool": "A", "hsh": "Ch3"},
            ["ignoring 'hsh': PoolRoute does not read it (mcrouter ignores it too) @ $.route.hsh"],
            id="unknown-route-key",
        ),
        pytest.param(
            {"type": "FailoverRoute", "children": [{"type": "NullRoute", "x": 1, "y": 2}]},
            [
                "ignoring 'x': NullRoute does not read it (mcrouter ignores it too)"
                " @ $.route.children[0].x",
                "ignoring 'y': NullRoute does not read it (mcrouter ignores it too)"
                " @ $.route.children[0].y",
            ],
            id="unknown-nested-route-keys",
        ),
        pytest.param(
            {"type": "LatestRoute", "children": "Pool|A", "host_id": 1},
            [
                "ignoring 'host_id': LatestRoute does not read it (mcrouter ignores it too)"
                " @ $.route.host_id"
            ],
            id="build-environment-field-not-from-the-config",
        ),
    ],
)
def test_unknown_route_keys_are_ignored_with_a_warning(
    route: object, warnings: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """mcrouter's route factories read the keys they know: a config with others runs."""
    with caplog.at_level(logging.WARNING, logger="mcrouter_trio.config"):
        loaded = load_config(config(route, {"A": {"servers": ["h:1", "h:2"]}}))
    assert [message for message in caplog.messages if "ignoring '" in message] == warnings
    assert loaded.route is not None


BAD_CONFIGS = [
    pytest.param(
        config({"type": "AllSyncRoute", "children": ["PoolRoute|A", {"type": "PoolRute"}]}),
        ["unknown route type 'PoolRute' @ $.route.children[1]"],
        id="unknown-route-type",
    ),
    pytest.param(
        config({"type": "RandomRoute", "children": ["PoolRoute|A", "PoolRoute|Z", "Pool|Z"]}),
        ["unknown pool 'Z' @ $.route.children[1]", "unknown pool 'Z' @ $.route.children[2]"],
        id="unknown-pool",
    ),
    pytest.param(
        config({"type": "PoolRoute", "pool": "Z"}),
        ["unknown pool 'Z' @ $.route.pool"],
        id="unknown-pool-object-form",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"server_timeout": 10}}),
        ["required field missing @ $.pools.A.servers"],
        id="missing-servers",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "server_timeout": "100"}}),
        ['expected an integer, got "100" @ $.pools.A.server_timeout'],
        id="server-timeout-string",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "server_timeout": 0}}),
        ["expected an integer in [1, 1000000], got 0 @ $.pools.A.server_timeout"],
        id="server-timeout-range",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1", "h:99999"]}}),
        ["invalid server 'h:99999' (port must be 0..65535, got '99999') @ $.pools.A.servers[1]"],
        id="bad-port",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servrs": ["h:1"]}}),
        ["extra fields found (servrs) @ $.pools.A", "required field missing @ $.pools.A.servers"],
        id="unknown-pool-key",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "weigths": [1], "timeout": 5}}),
        ["extra fields found (timeout, weigths) @ $.pools.A"],
        id="unknown-pool-keys-all-at-once",
    ),
    pytest.param(
        config({"type": "OperationSelectorRoute", "operation_policies": {"gett": "NullRoute"}}),
        ["unknown operation 'gett' @ $.route.operation_policies.gett"],
        id="unknown-operation",
    ),
    pytest.param(
        config({"type": "OperationSelectorRoute"}),
        ["needs 'operation_policies' or 'default_policy' @ $.route"],
        id="operation-selector-without-policies",
    ),
    pytest.param(
        '{\n  "pools": {}\n  "route": "NullRoute"\n}',
        ["invalid JSON: Expecting ',' delimiter at line 3 column 3"],
        id="json-syntax-error",
    ),
    pytest.param('{"pools": {}}', ["No route/routes in config @ $"], id="missing-route"),
    pytest.param("[]", ["expected an object, got an array @ $"], id="not-an-object"),
    pytest.param(
        config("NullRoute", []), ["expected an object, got an array @ $.pools"], id="bad-pools"
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "protocol": "caret"}}),
        [
            "protocol 'caret' is not supported: mcrouter's own binary protocol, not memcached's"
            " @ $.pools.A.protocol"
        ],
        id="protocol-caret",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "security_mech": "fizz"}}),
        ["security mech 'fizz' is not supported; use 'ssl' @ $.pools.A.security_mech"],
        id="mech-fizz",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "use_ssl": 1}}),
        ["expected true or false, got 1 @ $.pools.A.use_ssl"],
        id="bool-as-int",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h:1"], "weights": [0.5, 2]}}),
        ["weight 2 is out of range [0, 1] @ $.pools.A.weights"],
        id="weight-out-of-range",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": ["h"], "port_override": 0}}),
        [
            "expected an integer in [1, 65535], got 0 @ $.pools.A.port_override",
            "invalid server 'h' (missing port) @ $.pools.A.servers[0]",
        ],
        id="port-override-range",
    ),
    pytest.param(
        config("PoolRoute|A", {"A": {"servers": [5, "h"]}}),
        [
            "expected a server string, got 5 @ $.pools.A.servers[0]",
            "invalid server 'h' (missing port) @ $.pools.A.servers[1]",
        ],
        id="bad-servers",
    ),
    pytest.param(
        config(
            "PoolRoute|A",
            {"A": {"inherit": "B", "servers": []}, "B": {"inherit": "A"}, "C": {"inherit": "Z"}},
        ),
        [
            "cycle in pool inheritance (A -> B -> A) @ $.pools.A.inherit",
            "cycle in pool inheritance (B -> A -> B) @ $.pools.B.inherit",
            "unknown pool 'Z' @ $.pools.C.inherit",
            "required field missing @ $.pools.C.servers",
        ],
        id="inherit-problems",
    ),
    pytest.param(
        config("PoolRoute|C", {"P": {"servers": ["h:x"]}, "C": {"inherit": "P"}}),
        ["invalid server 'h:x' (port must be 0..65535, got 'x') @ $.pools.P.servers[0]"],
        id="inherited-problem-reported-once",
    ),
    pytest.param(
        config({"type": "HashRoute", "children": "Pool|A", "hash_func": "ch3", "salt": 5}),
        [
            "unknown hash function 'ch3' (known: Ch3, ConstShard, Crc32, WeightedCh3)"
            " @ $.route.hash_func",
            "expected a string, got 5 @ $.route.salt",
        ],
        id="hash-route-fields",
    ),
    pytest.param(
        config({"type": "PoolRoute", "pool": "A", "hash": {"hash_func": "Ch3", "sal": "x"}}),
        ["extra fields found (sal) @ $.route.hash"],
        id="hash-object-typo",
    ),
    pytest.param(
        config({"type": "WarmUpRoute", "cold": "PoolRoute|A", "exptime": "10"}),
        [
            "required field missing @ $.route.warm",
            'expected an integer, got "10" @ $.route.exptime',
        ],
        id="warm-up-fields",
    ),
    pytest.param(
        config({"type": "LatestRoute", "children": "Pool|A", "failover_count": -1}),
        ["expected an integer >= 0, got -1 @ $.route.failover_count"],
        id="latest-route-fields",
    ),
    pytest.param(
        config("Pool|A"),
        [
            "2 RouteHandles in list, expected 1: 'Pool|A' is a list of routes,"
            " use 'PoolRoute|A' for one route @ $.route"
        ],
        id="pool-list-as-single-route",
    ),
    pytest.param(
        config("AllSyncRoute|Pool|Z"), ["unknown pool 'Z' @ $.route"], id="short-form-unknown-pool"
    ),
    pytest.param(
        config("PoolRoute"),
        ["PoolRoute needs an argument: 'PoolRoute|<pool>' @ $.route"],
        id="no-arg",
    ),
    pytest.param(
        config("WarmUpRoute|A"), ["WarmUpRoute needs an object @ $.route"], id="warm-up-string"
    ),
    pytest.param(
        config(["NullRoute", "NullRoute"]),
        ["2 RouteHandles in list, expected 1 @ $.route"],
        id="route-array",
    ),
    pytest.param(config(""), ["expected a route, got an empty string @ $.route"], id="route-empty"),
    pytest.param(
        config({"children": "Pool|A"}), ["required field missing @ $.route.type"], id="no-type"
    ),
    pytest.param(
        config({"type": "FailoverRoute", "children": [{"type": "Pool", "servers": ["h:1"]}]}),
        ["required field missing @ $.route.children[0].name"],
        id="inline-pool-without-name",
    ),
    pytest.param(
        config(
            {
                "type": "FailoverRoute",
                "children": [
                    "NullRoute",
                    {"type": "Pool", "name": "N", "servers": ["h:1", "h:x"], "bogus": 1},
                ],
            }
        ),
        [
            "invalid server 'h:x' (port must be 0..65535, got 'x')"
            " @ $.route.children[1].servers[1]",
            "extra fields found (bogus) @ $.route.children[1]",
        ],
        id="inline-pool-problems",
    ),
    pytest.param(
        config({"type": "FailoverRoute", "children": {"type": "PoolRoute", "pool": 7}}),
        ["expected a pool name or a pool object, got 7 @ $.route.children.pool"],
        id="pool-wrong-type",
    ),
    pytest.param(
        config(
            {
                "type": "OperationSelectorRoute",
                "operation_policies": {"get": "PoolRoute|Z", "set": {"type": "Nope"}},
                "default_policy": {"type": "AllSyncRoute", "children": ["Pool|A", 3]},
            }
        ),
        [
            "unknown pool 'Z' @ $.route.operation_policies.get",
            "unknown route type 'Nope' @ $.route.operation_policies.set",
            "expected a route (object or string), got 3 @ $.route.default_policy.children[1]",
        ],
        id="several-problems",
    ),
]


@pytest.mark.parametrize(("text", "errors"), BAD_CONFIGS)
def test_bad_configs(text: str, errors: list[str]) -> None:
    assert errors_of(text) == errors


def test_bad_arguments() -> None:
    assert errors_of(config("NullRoute"), default_timeout_ms=0) == [
        "default server timeout must be 1..1000000 ms, not 0"
    ]
    assert errors_of(config("NullRoute"), default_mech="tls") == [
        "default security mech must be 'plain' or 'ssl', not 'tls'"
    ]


def test_config_error_format() -> None:
    error = ConfigError(["one @ $.a", "two @ $.b"], "conf.json")
    assert str(error) == "conf.json: one @ $.a\nconf.json: two @ $.b"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.errors, copy.source, str(copy)) == (error.errors, error.source, str(error))


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mcrouter.json"
    path.write_text(SEED_5_3_2, encoding="utf-8")
    loaded = load_config_file(path, default_timeout_ms=300)
    assert loaded == load_config(SEED_5_3_2, default_timeout_ms=300)
    assert loaded.md5 == hashlib.md5(path.read_bytes()).hexdigest()

    path.write_text('{"route": "PoolRoute|nope"}', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert str(info.value) == f"{path}: unknown pool 'nope' @ $.route"

    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path / "missing.json")
    assert (
        str(info.value)
        == f"{tmp_path / 'missing.json'}: cannot read the config: No such file or directory"
    )

    path.write_bytes(b'{"route": "\xff"}')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.errors == ["the config is not UTF-8 (byte 11)"]


# Any document built from config vocabulary either loads or fails with a
# ConfigError whose every line has a path: never another exception.
_WORDS = st.sampled_from(
    [
        "type", "children", "pool", "pools", "route", "servers", "name", "hash", "hash_func",
        "operation_policies", "default_policy", "cold", "warm", "inherit", "weights", "A",
        "PoolRoute|A", "Pool|A", "AllSyncRoute|Pool|A", "HashRoute|Pool|B", "NullRoute",
        "ErrorRoute|x", "Pool", "PoolRoute", "HashRoute", "LatestRoute", "WarmUpRoute",
        "OperationSelectorRoute", "get", "h:1", "[::1]:2", "Ch3", "WeightedCh3", "",
    ]
)  # fmt: skip
_VALUES = st.recursive(
    _WORDS | st.integers(-2, 3) | st.booleans() | st.none() | st.floats(0, 2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_WORDS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(pools=st.dictionaries(_WORDS, _VALUES, max_size=3), route=_VALUES)
def test_every_failure_is_a_config_error(pools: dict[str, Any], route: Any) -> None:
    pools.setdefault("A", {"servers": ["a:1", "a:2"]})
    pools.setdefault("B", {"servers": []})
    try:
        load_config(json.dumps({"pools": pools, "route": route}))
    except ConfigError as exc:
        assert exc.errors
        for error in exc.errors:
            assert " @ $" in error, error
            assert "internal error" not in error, error


@pytest.mark.parametrize(
    "route",
    [
        {"type": "PoolRoute", "pool": "A", "hash": {"hash_func": "WeightedCh3", "weights": []}},
        {"type": "HashRoute", "children": "Pool|A", "hash_func": "WeightedCh3", "weights": []},
        {"type": "LatestRoute", "children": "Pool|A", "weights": []},
    ],
    ids=["pool-route", "hash-route", "latest-route"],
)
def test_weights_beyond_the_children_are_ignored(route: dict[str, Any]) -> None:
    """As in mcrouter, only one weight per child is read (pool A has two servers)."""
    weights: list[Any] = route["hash"]["weights"] if "hash" in route else route["weights"]
    weights[:] = [0.5, 1, 5, 100]
    load_config(config(route))
    weights[:] = [0.5, 5]
    assert errors_of(config(route)) == ["weight 5 is out of range [0, 1] @ $.route"]


@pytest.mark.parametrize(
    ("route", "errors"),
    [
        (
            {"type": "PoolRoute", "pool": "A", "axonlog": True, "axonlog_tier": "t"},
            [
                "AxonLogRoute (axonlog: true) exists only inside Meta and is not supported"
                " @ $.route.axonlog"
            ],
        ),
        (
            {"type": "PoolRoute", "pool": "A", "axonlog": 1},
            ["expected true or false, got 1 @ $.route"],
        ),
        ({"type": "PoolRoute", "pool": "A", "axonlog": False, "axonlog_tier": "t"}, []),
    ],
    ids=["axonlog", "axonlog-not-bool", "axonlog-off"],
)
def test_axonlog_is_refused_as_meta_only(route: dict[str, Any], errors: list[str]) -> None:
    if errors:
        assert errors_of(config(route)) == errors
    else:  # off: mcrouter does nothing with the other axonlog options
        assert isinstance(load_config(config(route)).route, PoolRoute)
