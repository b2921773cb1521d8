"""KeySplitRoute in memory: replica keys per host, all_sync, first_hit, deletes everywhere."""

from __future__ import annotations

import json

import pytest
from handle_helpers import HIT, MISS, STORED, destinations, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.messages import Op, Reply, Request, Result
from mcrouter_trio.routing.handles.keysplit import KeySplitRoute, replica_key
from mcrouter_trio.routing.testing import FakeContext

(DEST,) = destinations(1)


def _keys(route: KeySplitRoute, wire: bytes) -> list[bytes]:
    ctx = FakeContext()
    route.route(request(wire), ctx)
    return [sent.request.key for sent in ctx.sent]


@pytest.mark.parametrize(
    ("key", "replica", "expected"),
    [
        (b"k", 0, b"k"),
        (b"k", 1, b"k::1"),
        (b"k", 12, b"k::12"),
        (b"k|#|tail", 2, b"k::2|#|tail"),
        (b"/a/b/k", 1, b"/a/b/k::1"),
    ],
)
def test_replica_keys(key: bytes, replica: int, expected: bytes) -> None:
    assert replica_key(key, replica) == expected


# (replicas, all_sync, first_hit, host id, command, the keys sent in order)
ROWS = [
    pytest.param(3, False, False, 0, b"get k\r\n", [b"k"], id="replica-0-is-the-key"),
    pytest.param(3, False, False, 4, b"get k\r\n", [b"k::1"], id="host-id-mod-replicas"),
    pytest.param(3, False, False, 5, b"mg k v\r\n", [b"k::2"], id="meta-get"),
    pytest.param(3, False, False, 5, b"set k 0 0 1\r\nv\r\n", [b"k::2"], id="set-one"),
    pytest.param(3, True, False, 5, b"set k 0 0 1\r\nv\r\n", [b"k", b"k::1", b"k::2"],
                 id="set-all-sync"),
    pytest.param(3, False, False, 1, b"delete k\r\n", [b"k", b"k::2", b"k::1"],
                 id="delete-every-replica"),
    pytest.param(2, False, False, 1, b"incr k 1\r\n", [b"k::1"], id="other-commands-one"),
    pytest.param(2, False, True, 0, b"get k\r\n", [b"k", b"k::1"], id="first-hit-asks-all"),
]  # fmt: skip


@pytest.mark.parametrize(("replicas", "all_sync", "first_hit", "host_id", "wire", "keys"), ROWS)
def test_keysplit_rules(
    replicas: int, all_sync: bool, first_hit: bool, host_id: int, wire: bytes, keys: list[bytes]
) -> None:
    route = KeySplitRoute(DEST, replicas, all_sync, first_hit, host_id=host_id)
    assert _keys(route, wire) == keys


def test_a_key_too_long_for_a_replica_suffix_is_not_split() -> None:
    long_key = b"x" * 251  # longer than a client may send; mcrouter's limit is 255 with `::999`
    route = KeySplitRoute(DEST, 2, True, True, host_id=1)
    ctx = FakeContext()
    route.route(Request(Op.GET, long_key, (long_key,)), ctx)
    assert [sent.request.key for sent in ctx.sent] == [long_key]


def test_first_hit_answers_the_first_hit_else_the_last_reply() -> None:
    route = KeySplitRoute(DEST, 3, False, True)
    ctx = FakeContext()
    pending = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[2].answer(MISS)
    ctx.sent[0].answer(HIT)
    assert pending.reply is HIT
    ctx = FakeContext()
    pending = route.route(request(b"get k\r\n"), ctx)
    for sent in ctx.sent:
        sent.answer(MISS)
    assert pending.reply is MISS


def test_all_sync_answers_this_hosts_replica_and_writes_the_rest_in_the_background() -> None:
    route = KeySplitRoute(DEST, 2, True, host_id=1)
    ctx = FakeContext()
    pending = route.route(request(b"set k 0 0 1\r\nv\r\n"), ctx)
    assert ctx.background.in_flight == 1
    ctx.sent[1].answer(STORED)  # k::1, this host's
    assert pending.reply is STORED


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"replicas": 1, "all_sync": False},
            "expected an integer in [2, 1000], got 1 @ $.route.replicas",
        ),
        ({"replicas": 1001, "all_sync": False}, "got 1001 @ $.route.replicas"),
        ({"replicas": 2}, "required field missing @ $.route.all_sync"),
        ({"all_sync": True}, "required field missing @ $.route.replicas"),
    ],
)
def test_bad_keysplit_configs(options: dict[str, object], message: str) -> None:
    route = {"type": "KeySplitRoute", "destination": "PoolRoute|A", **options}
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"]}}, "route": route}
    with pytest.raises(ConfigError) as caught:
        load_config(json.dumps(config))
    assert message in str(caught.value)


def test_the_client_sees_its_own_key_not_the_replicas() -> None:
    route = KeySplitRoute(DEST, 2, False, host_id=1)
    ctx = FakeContext()
    got = route.route(request(b"get k\r\n"), ctx)
    ctx.sent[0].answer(Reply(Result.FOUND, b"VALUE k::1 5 1\r\nv\r\nEND\r\n"))
    assert got.reply is not None and got.reply.raw == b"VALUE k 5 1\r\nv\r\nEND\r\n"
    meta = route.route(request(b"mg k k v\r\n"), ctx)
    ctx.sent[1].answer(Reply(Result.FOUND, b"VA 1 kk::1\r\nv\r\n"))
    assert meta.reply is not None and meta.reply.raw == b"VA 1 kk\r\nv\r\n"
