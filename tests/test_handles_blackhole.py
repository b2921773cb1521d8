"""BlackholeRoute in memory: field policies, equals / not_equals, or within a field."""

from __future__ import annotations

import json

import pytest
from handle_helpers import destinations, port_of, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.routing.handles.blackhole import BlackholeRoute, check_policies
from mcrouter_trio.routing.testing import FakeContext

DEFAULT, HOLE = destinations(2)

# (policies, command, blackholed?)
ROWS = [
    pytest.param({"key": [{"op": "equals", "value": "bad"}]}, b"get bad\r\n", True,
                 id="key-equals"),
    pytest.param({"key": [{"op": "equals", "value": "bad"}]}, b"get good\r\n", False,
                 id="key-differs"),
    pytest.param({"key": [{"op": "not_equals", "value": "good"}]}, b"get bad\r\n", True,
                 id="not-equals"),
    pytest.param({"key": [{"op": "equals", "value": "a"}, {"op": "equals", "value": "b"}]},
                 b"delete b\r\n", True, id="or-within-a-field"),
    pytest.param({"key": [{"op": "equals", "value": "k"}], "flags": [{"op": "equals", "value": 7}]},
                 b"set k 8 0 1\r\nv\r\n", False, id="and-across-fields"),
    pytest.param({"key": [{"op": "equals", "value": "k"}], "flags": [{"op": "equals", "value": 7}]},
                 b"set k 7 0 1\r\nv\r\n", True, id="both-fields-match"),
    pytest.param({"exptime": [{"op": "equals", "value": 0}]}, b"get k\r\n", True,
                 id="a-field-the-request-lacks-is-skipped"),
    pytest.param({"exptime": [{"op": "equals", "value": 0}]}, b"set k 0 60 1\r\nv\r\n", False,
                 id="exptime"),
    pytest.param({"delta": [{"op": "equals", "value": 5}]}, b"incr k 5\r\n", True, id="delta"),
    pytest.param({"key": [{"op": "equals", "value": 1}]}, b"get 1\r\n", False,
                 id="a-number-never-matches-the-key"),
    pytest.param({"flags": [{"op": "equals", "value": True}]}, b"set k 3 0 1\r\nv\r\n", True,
                 id="bool-is-nonzero"),
    pytest.param({"value": [{"op": "not_equals", "value": "x"}]}, b"set k 0 0 1\r\nv\r\n", False,
                 id="the-value-never-matches"),
    pytest.param({}, b"get k\r\n", True, id="no-policies-blackholes-everything"),
]  # fmt: skip


@pytest.mark.parametrize(("policies", "wire", "blackholed"), ROWS)
def test_blackhole_rules(policies: dict[str, object], wire: bytes, blackholed: bool) -> None:
    route = BlackholeRoute(DEFAULT, check_policies(policies), HOLE)
    ctx = FakeContext()
    route.route(request(wire), ctx)
    assert port_of(ctx.sent[0]) == (2 if blackholed else 1)


def test_the_default_black_hole_is_null_route() -> None:
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"]}},
              "route": {"type": "BlackholeRoute", "default": "PoolRoute|A",
                        "policies": {"key": [{"op": "equals", "value": "gone"}]}}}  # fmt: skip
    route = load_config(json.dumps(config)).route
    ctx = FakeContext()
    pending = route.route(request(b"get gone\r\n"), ctx)
    assert pending.reply is not None and pending.reply.raw == b"END\r\n" and not ctx.sent


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([], "'policies' must be an object, got an array"),
        ({"key": {}}, "policies for 'key' must be in an array."),
        ({"key": ["x"]}, "each policy in the array for 'key' must be an object."),
        ({"key": [{"value": 1}]}, "policy object for 'key' must contain an \"op\" option"),
        ({"key": [{"op": "less", "value": 1}]}, "policy op for 'key' is not supported"),
        ({"key": [{"op": "equals"}]}, "policy object for 'key' must contain an \"value\" option"),
    ],
)
def test_bad_policies(policies: object, message: str) -> None:
    route = {"type": "BlackholeRoute", "default": "PoolRoute|A", "policies": policies}
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"]}}, "route": route}
    with pytest.raises(ConfigError) as caught:
        load_config(json.dumps(config))
    assert f"BlackholeRoute: {message} @ $.route.policies" in str(caught.value)
