"""PoolRoute `shard_splits` in memory: mcrouter's ShardSplitRoute and ShardSplitter rules."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from handle_helpers import HIT, MISS, request

from mcrouter_trio.config import ConfigError, load_config, load_config_file
from mcrouter_trio.messages import Pending, Reply, Request, Result
from mcrouter_trio.routing.handles._shard_splits import (
    MAX_SPLITS,
    ShardSplit,
    ShardSplits,
    shard_id_end,
    split_suffix,
)
from mcrouter_trio.routing.testing import FakeContext


@pytest.mark.parametrize(
    ("key", "span"),
    [
        (b"a:1:blah", (2, 3)),
        (b"abc:1234:x:y", (4, 8)),
        (b"a:x1:b", (2, 4)),  # ends in a digit: a shard id
        (b":7:b", (1, 2)),
        (b"a:1aa:blah", None),  # a copy's key: ends in letters
        (b"a::b", None),
        (b"a:1", None),
        (b"a1b", None),
    ],
)
def test_shard_ids_as_mcrouter_finds_them(key: bytes, span: tuple[int, int] | None) -> None:
    assert shard_id_end(key) == span


@pytest.mark.parametrize(
    ("offset", "suffix"),
    [(0, b""), (1, b"aa"), (2, b"ba"), (26, b"za"), (27, b"ab"), (MAX_SPLITS - 1, b"zz")],
)
def test_copy_suffixes(offset: int, suffix: bytes) -> None:
    assert split_suffix(offset) == suffix


SERVERS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]


def _pool(shard_splits: object, **extra: object) -> Any:
    config = load_config(
        json.dumps(
            {
                "pools": {"A": {"servers": SERVERS}},
                "route": {"type": "PoolRoute", "pool": "A", "shard_splits": shard_splits, **extra},
            }
        )
    )
    return config.route


def _sent_keys(splits: object, host_id: int, wire: bytes) -> list[bytes]:
    ctx = FakeContext(host_id=host_id, answer=lambda server, _request: MISS)
    _pool(splits).route(request(wire), ctx)
    return [sent.request.key for sent in ctx.sent]


THREE = {"1": 3}
# (splits, host id, command) -> the keys sent, in order
ROWS = [
    pytest.param(THREE, 0, b"get a:1:k\r\n", [b"a:1:k"], id="host-0-copy-0"),
    pytest.param(THREE, 1, b"get a:1:k\r\n", [b"a:1aa:k"], id="host-1-copy-1"),
    pytest.param(THREE, 5, b"get a:1:k\r\n", [b"a:1ba:k"], id="host-5-copy-2"),
    pytest.param(THREE, 1, b"gets a:1:k\r\n", [b"a:1aa:k"], id="gets"),
    pytest.param(THREE, 1, b"mg a:1:k v\r\n", [b"a:1aa:k"], id="meta-get"),
    pytest.param(THREE, 1, b"set a:1:k 0 0 1\r\nv\r\n", [b"a:1aa:k"], id="set-one-copy"),
    pytest.param(THREE, 1, b"incr a:1:k 1\r\n", [b"a:1aa:k"], id="incr-one-copy"),
    pytest.param(THREE, 1, b"delete a:1:k\r\n", [b"a:1:k", b"a:1aa:k", b"a:1ba:k"],
                 id="delete-every-copy"),
    pytest.param(THREE, 1, b"md a:1:k\r\n", [b"a:1:k", b"a:1aa:k", b"a:1ba:k"],
                 id="meta-delete-every-copy"),
    pytest.param(THREE, 1, b"get a:1aa:k\r\n", [b"a:1aa:k"], id="a-copy-key-is-not-split"),
    pytest.param(THREE, 1, b"get a:5:k\r\n", [b"a:5:k"], id="shard-not-split"),
    pytest.param(THREE, 1, b"get nocolon\r\n", [b"nocolon"], id="no-shard-id"),
    pytest.param(THREE, 1, b"get a:1:k|#|x\r\n", [b"a:1aa:k|#|x"], id="hash-stop"),
    pytest.param(THREE, 1, b"get /r/c/a:1:k\r\n", [b"a:1aa:k"], id="routing-prefix"),
    pytest.param(THREE, 1, b"mg YToxOms= b v\r\n", [b"YToxOms="], id="base64-key-as-is"),
    pytest.param({"1": 1}, 1, b"delete a:1:k\r\n", [b"a:1:k"], id="one-copy-is-no-split"),
    pytest.param({"1": {"new_split_size": 3}}, 1, b"delete a:1:k\r\n", [b"a:1aa:k"],
                 id="object-form-deletes-one-copy"),
    pytest.param({"1": {"new_split_size": 3, "fanout_deletes": True}}, 1,
                 b"delete a:1:k\r\n", [b"a:1:k", b"a:1aa:k", b"a:1ba:k"],
                 id="object-form-fanout-deletes"),
]  # fmt: skip


@pytest.mark.parametrize(("splits", "host_id", "wire", "keys"), ROWS)
def test_shard_split_routing(splits: object, host_id: int, wire: bytes, keys: list[bytes]) -> None:
    assert _sent_keys(splits, host_id, wire) == keys


def test_each_copy_goes_to_the_server_its_key_hashes_to() -> None:
    pool = _pool({"1": 20})
    ctx = FakeContext(answer=lambda server, _request: MISS)
    pool.route(request(b"delete a:1:k\r\n"), ctx)
    assert len(ctx.sent) == 20
    ports = {sent.server.port for sent in ctx.sent}
    assert len(ports) > 1  # the copies spread over the pool
    for sent in ctx.sent:
        index = pool.selected_index(request(b"get " + sent.request.key + b"\r\n"))
        assert sent.server.address == SERVERS[index]


def test_the_client_sees_its_own_key() -> None:
    def answer(_server: object, sent: Request) -> Reply:
        return Reply(Result.FOUND, b"VALUE " + sent.key + b" 5 1\r\nv\r\nEND\r\n")

    ctx = FakeContext(host_id=2, answer=answer)
    pending = _pool(THREE).route(request(b"get a:1:k\r\n"), ctx)
    assert ctx.sent[0].request.key == b"a:1ba:k"
    assert pending.reply is not None
    assert pending.reply.raw == b"VALUE a:1:k 5 1\r\nv\r\nEND\r\n"
    meta = FakeContext(host_id=2, answer=lambda _server, _request: Reply(
        Result.FOUND, b"VA 1 ka:1ba:k\r\nv\r\n"))  # fmt: skip
    pending = _pool(THREE).route(request(b"mg a:1:k k v\r\n"), meta)
    assert pending.reply is not None
    assert pending.reply.raw == b"VA 1 ka:1:k\r\nv\r\n"


def test_a_delete_answers_with_copy_zero_and_the_others_run_in_the_background() -> None:
    ctx = FakeContext(host_id=1)
    pending = _pool(THREE).route(request(b"delete a:1:k\r\n"), ctx)
    primary, *copies = ctx.sent
    assert ctx.background.started == 2 and ctx.background.in_flight == 2
    for copy in copies:
        copy.answer(Reply(Result.NOTFOUND, b"NOT_FOUND\r\n"))
    assert _reply(pending) is None
    deleted = Reply(Result.DELETED, b"DELETED\r\n")
    primary.answer(deleted)
    assert _reply(pending) is deleted
    assert ctx.background.in_flight == 0


def _reply(pending: Pending) -> Reply | None:
    return pending.reply


def _whole(pool: Any, wire: bytes) -> Pending | None:
    ctx = FakeContext(host_id=1, answer=lambda server, _request: HIT)
    whole: Pending | None = pool.route_whole(
        request(wire), ctx, lambda route, req: route.route(req, ctx)
    )
    return whole


def test_multi_gets_of_split_shards_go_key_by_key() -> None:
    pool = _pool(THREE)
    assert _whole(pool, b"get a:1:k a:5:k\r\n") is None
    assert _whole(pool, b"get a:5:k a:6:k\r\n") is not None


# (old, new, start, period, now, host id) -> the copies this host uses
MIGRATIONS = [
    pytest.param(2, 4, 1000, 100, 999.0, 0, 2, id="before-start-old"),
    pytest.param(2, 4, 1000, 100, 1100.5, 16383, 4, id="after-period-new"),
    pytest.param(2, 4, 1000, 100, 1050.0, 8191, 4, id="host-below-elapsed-share-new"),
    pytest.param(2, 4, 1000, 100, 1050.0, 8192, 2, id="host-at-elapsed-share-old"),
    pytest.param(2, 4, 1000, 100, 1050.0, 16384 + 100, 4, id="host-id-modulo-16384"),
    pytest.param(2, 4, 1000, 0, 1000.0, 0, 2, id="zero-period-at-start-old"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "start", "period", "now", "host_id", "size"), MIGRATIONS)
def test_migrating_split_sizes(
    old: int, new: int, start: int, period: int, now: float, host_id: int, size: int
) -> None:
    assert ShardSplit(new, False, old, start, period).size(now, host_id) == size


def test_a_migration_routes_by_the_wall_clock() -> None:
    migration = {"old_split_size": 1, "new_split_size": 3, "split_start": 1000,
                 "migration_period": 100, "fanout_deletes": True}  # fmt: skip
    parsed = ShardSplits.parse({"1": migration})
    clock = [900.0]
    splits = ShardSplits(parsed.splits, wall_clock=lambda: clock[0])
    sent: list[bytes] = []

    def route_one(req: Request, _ctx: object) -> Pending:
        sent.append(req.key)
        return Pending(MISS)

    ctx = FakeContext(host_id=1)
    splits.route(request(b"delete a:1:k\r\n"), ctx, route_one)
    assert sent == [b"a:1:k"]  # before the start: one copy
    clock[0] = 1200.0
    sent.clear()
    splits.route(request(b"delete a:1:k\r\n"), ctx, route_one)
    assert sent == [b"a:1:k", b"a:1aa:k", b"a:1ba:k"]


def test_splits_of_one_copy_are_not_kept_and_big_ones_are_capped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        splits = ShardSplits.parse({"1": 1, "2": 10000, "3": {"old_split_size": 2}})
    assert splits.splits == {
        b"2": ShardSplit(MAX_SPLITS),
        b"3": ShardSplit(1, False, 2, 0.0, 0.0),
    }
    assert "ShardSplitter: shard_splits value is greater than 677 for 2" in caplog.text


# mcrouter's ShardSplitter checks, at the `shard_splits` path.
ERRORS = [
    ([], "ShardSplitter: config is not an object"),
    ({"1": "3"}, "ShardSplitter: split config for 1 is not an int or object"),
    ({"1": 3.0}, "ShardSplitter: split config for 1 is not an int or object"),
    ({"1": 0}, "ShardSplitter: shard_splits value is <= 0 for 1"),
    ({"1": {"new_split_size": "2"}}, "ShardSplitter: new_split_size is not an int for 1"),
    ({"1": {"old_split_size": -1}}, "ShardSplitter: old_split_size value is <= 0 for 1"),
    ({"1": {"split_start": 1.5}}, "ShardSplitter: split_start is not an int for 1"),
    ({"1": {"split_start": -1}}, "ShardSplitter: split_start is negative for 1"),
    ({"1": {"migration_period": -1}}, "ShardSplitter: migration_period is negative for 1"),
    ({"1": {"fanout_deletes": 1}}, "ShardSplitter: fanout_deletes is not bool for 1"),
]  # fmt: skip


@pytest.mark.parametrize(("splits", "error"), ERRORS)
def test_bad_shard_splits_are_refused_at_their_path(splits: object, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        _pool(splits)
    assert info.value.errors == [f"{error} @ $.route.shard_splits"]


def test_split_shard_fanout_is_an_integer() -> None:
    assert _pool(THREE, split_shard_fanout=4).split_shard_fanout == 4
    with pytest.raises(ConfigError) as info:
        _pool(THREE, split_shard_fanout="4")
    assert info.value.errors == ['expected an integer, got "4" @ $.route.split_shard_fanout']


def test_foreach_client_config_keeps_its_shadow_and_splits() -> None:
    """test_foreach_client.json: splits on two PoolRoutes; a shadow's `shard_splits`
    is ignored, as open-source mcrouter ignores it, and the shadow kept."""
    path = Path(__file__).parent / "data" / "mcrouter-configs" / "test_foreach_client.json"
    route: Any = load_config_file(path).route
    a, b = route.policies["a"], route.policies["b"]
    assert a.shard_splits.splits == {b"1": ShardSplit(3)}
    assert [shadow.target.pool.name for shadow in a.shadows] == ["C"]
    again: Any = load_config_file(path).route
    assert again.policies["a"] == a and hash(again.policies["a"]) == hash(a)  # values
    assert b.normal.shard_splits.splits == {b"2": ShardSplit(10)}
    ctx = FakeContext(host_id=4, answer=lambda server, _request: MISS)
    b.route(request(b"get b:2:k\r\n"), ctx)
    assert [sent.request.key for sent in ctx.sent] == [b"b:2da:k"]  # copy 4 % 10
