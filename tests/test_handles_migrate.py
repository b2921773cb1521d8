"""MigrateRoute in memory: per-key switch times, deletes to both during the migration."""

from __future__ import annotations

import json

import pytest
from handle_helpers import DELETED, NOT_FOUND, destinations, port_of, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing._spooky import spooky_hash32
from mcrouter_trio.routing.handles.migrate import MigrateRoute
from mcrouter_trio.routing.testing import FakeContext

FROM, TO = destinations(2)
START, INTERVAL = 1_000_000, 100


def _migrate(now: float) -> MigrateRoute:
    return MigrateRoute(FROM, TO, START, INTERVAL, wall_clock=lambda: now)


def _ports(route: MigrateRoute, wire: bytes) -> list[int]:
    ctx = FakeContext()
    route.route(request(wire), ctx)
    return [port_of(sent) for sent in ctx.sent]


#: The key "k" switches at START + INTERVAL + its hash % INTERVAL.
SWITCH = START + INTERVAL + spooky_hash32(b"k") % INTERVAL

# (wall time, command, the ports it goes to: 1 = from, 2 = to)
ROWS = [
    pytest.param(START - 1, b"get k\r\n", [1], id="get-before-start"),
    pytest.param(SWITCH - 1, b"get k\r\n", [1], id="get-just-before-its-switch"),
    pytest.param(SWITCH, b"get k\r\n", [2], id="get-at-its-switch"),
    pytest.param(SWITCH, b"set k 0 0 1\r\nv\r\n", [2], id="set-follows-the-key"),
    pytest.param(SWITCH - 1, b"mg /a/b/k|#|x v\r\n", [1], id="meta-routing-key"),
    pytest.param(SWITCH, b"mg /a/b/k|#|x v\r\n", [2], id="meta-routing-key-switched"),
    pytest.param(START - 1, b"delete k\r\n", [1], id="delete-before-start"),
    pytest.param(START, b"delete k\r\n", [1, 2], id="delete-during-to-both"),
    pytest.param(START + 2 * INTERVAL - 1, b"md k\r\n", [1, 2], id="delete-until-the-end"),
    pytest.param(START + 2 * INTERVAL, b"delete k\r\n", [2], id="delete-after"),
]  # fmt: skip


@pytest.mark.parametrize(("now", "wire", "ports"), ROWS)
def test_migrate_route_rules(now: int, wire: bytes, ports: list[int]) -> None:
    assert _ports(_migrate(now), wire) == ports


def test_keys_switch_one_by_one_over_the_interval() -> None:
    keys = [b"key%d" % i for i in range(200)]
    moved_at = [_migrate(0).switch_time(request(b"get " + key + b"\r\n")) for key in keys]
    assert min(moved_at) >= START + INTERVAL and max(moved_at) < START + 2 * INTERVAL
    halfway = _migrate(START + INTERVAL + INTERVAL // 2)
    moved = sum(_ports(halfway, b"get " + key + b"\r\n") == [2] for key in keys)
    assert 60 < moved < 140


def test_a_delete_during_the_migration_answers_the_worse_reply() -> None:
    ctx = FakeContext()
    pending = _migrate(START + 1).route(request(b"delete k\r\n"), ctx)
    ctx.sent[0].answer(DELETED)
    ctx.sent[1].answer(NOT_FOUND)
    assert pending.reply is NOT_FOUND


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"to": "PoolRoute|A", "start_time": 1}, "required field missing @ $.route.from"),
        ({"from": "PoolRoute|A", "to": "PoolRoute|A"},
         "required field missing @ $.route.start_time"),
        ({"from": "PoolRoute|A", "to": "PoolRoute|A", "start_time": 1, "interval": 0},
         "expected an integer >= 1, got 0 @ $.route.interval"),
        ({"from": "PoolRoute|A", "to": "PoolRoute|A", "start_time": "1"},
         "@ $.route.start_time"),
    ],
)  # fmt: skip
def test_bad_migrate_configs(route: dict[str, object], message: str) -> None:
    config = {
        "pools": {"A": {"servers": ["127.0.0.1:1"]}},
        "route": {"type": "MigrateRoute", **route},
    }
    with pytest.raises(ConfigError) as caught:
        load_config(json.dumps(config))
    assert message in str(caught.value)
