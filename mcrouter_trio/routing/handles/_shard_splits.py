"""Shard splits (PoolRoute `shard_splits`: mcrouter's ShardSplitRoute and ShardSplitter).

A key such as `a:1234:rest` carries a shard id, `1234`: the text between its first
two colons, ending in a digit (mcrouter's `getShardId`, on the routing key). A shard
that outgrew its server is *split* into N copies: copy 0 is the key itself, copy i
(1 <= i < N) is the key with two letters after the shard id, `a:1234aa:rest`,
`a:1234ba:rest`, ... `a:1234zz:rest` (so at most 26 * 26 + 1 copies); each copy
hashes to its own server. A delete goes to every copy (the client gets copy 0's
reply, the others run in the background) when the split is a plain number or says
`"fanout_deletes": true`; every other command goes to the one copy this host
picks, `host id % N`.
A key whose shard id ends in letters (a copy's key, sent directly) is not split.

A split is a number of copies, or an object that moves from `old_split_size` to
`new_split_size` during `migration_period` seconds from `split_start` (unix time):
each host switches when `(host id % 16384) / 16384` falls below the elapsed share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Final

import attrs

from mcrouter_trio.hashing import routing_key
from mcrouter_trio.messages import GET_LIKE, META, Op, Pending, Request
from mcrouter_trio.routing._base import RouteContext
from mcrouter_trio.routing._checks import Invalid
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing.handles.destination import split_routing_prefix
from mcrouter_trio.routing.handles.modify import own_meta_key, own_value_key

log = logging.getLogger(__name__)

_NAME: Final = "ShardSplitRoute"
#: Copy 0 plus two letters' worth of copies.
MAX_SPLITS: Final = 26 * 26 + 1
#: A host's place in a migration: its host id modulo this, as a share of it.
_HOST_ID_MODULO: Final = 16384
#: mcrouter's DeleteLike requests (`md` is a delete).
_DELETES: Final = frozenset({Op.DELETE, Op.MD})

#: Routes one request the way the pool would without splits.
RouteOne = Callable[[Request, RouteContext], Pending]


def shard_id_end(key: bytes) -> tuple[int, int] | None:
    """Where the shard id of a routing key starts and ends, or None if it has none."""
    first = key.find(b":")
    if first < 0:
        return None
    start = first + 1
    end = key.find(b":", start)
    if end <= start or not key[end - 1 : end].isdigit():
        return None
    return start, end


def split_suffix(offset: int) -> bytes:
    """What copy `offset` appends to the shard id: nothing for 0, then `aa`, `ba`, ... `zz`."""
    if offset == 0:
        return b""
    return bytes((0x61 + (offset - 1) % 26, 0x61 + (offset - 1) // 26))


@attrs.frozen
class ShardSplit:
    """One shard's number of copies, or a move from `old_size` to `new_size` copies."""

    new_size: int
    fanout_deletes: bool = True
    old_size: int = 0
    #: Unix seconds; only for a migration (`old_size` set and not `new_size`).
    start: float = 0.0
    period: float = 0.0

    @property
    def migrating(self) -> bool:
        return self.old_size not in (0, self.new_size)

    def size(self, now: float, host_id: int) -> int:
        """How many copies this host uses at wall-clock time `now`."""
        if now < self.start:
            return self.old_size
        if now > self.start + self.period:
            return self.new_size
        if self.period == 0:
            return self.old_size  # mcrouter: 0/0 is NaN, and NaN compares false
        elapsed = (now - self.start) / self.period
        if host_id % _HOST_ID_MODULO / _HOST_ID_MODULO < elapsed:
            return self.new_size
        return self.old_size


def _size(shard: str, value: object, name: str) -> int:
    if type(value) is not int:
        raise Invalid(f"ShardSplitter: {name} is not an int for {shard}")
    if value <= 0:
        raise Invalid(f"ShardSplitter: {name} value is <= 0 for {shard}")
    if value > MAX_SPLITS:
        log.error("ShardSplitter: %s value is greater than %d for %s", name, MAX_SPLITS, shard)
        return MAX_SPLITS
    return value


def _seconds(shard: str, settings: Mapping[str, object], name: str) -> float:
    value = settings.get(name, 0)
    if type(value) is not int:
        raise Invalid(f"ShardSplitter: {name} is not an int for {shard}")
    if value < 0:
        raise Invalid(f"ShardSplitter: {name} is negative for {shard}")
    return float(value)


def _parse_split(shard: str, value: object) -> ShardSplit:
    """mcrouter's parseSplit: a number of copies, or a migration object."""
    if type(value) is int:
        return ShardSplit(_size(shard, value, "shard_splits"))
    if not isinstance(value, dict):
        raise Invalid(f"ShardSplitter: split config for {shard} is not an int or object")
    old = _size(shard, value.get("old_split_size", 1), "old_split_size")
    new = _size(shard, value.get("new_split_size", 1), "new_split_size")
    start = _seconds(shard, value, "split_start")
    period = _seconds(shard, value, "migration_period")
    fanout = value.get("fanout_deletes", False)
    if type(fanout) is not bool:
        raise Invalid(f"ShardSplitter: fanout_deletes is not bool for {shard}")
    if old == new:
        return ShardSplit(new, fanout)
    return ShardSplit(new, fanout, old, start, period)


def _read_only(splits: Mapping[bytes, ShardSplit]) -> Mapping[bytes, ShardSplit]:
    return MappingProxyType(dict(splits))


@attrs.frozen
class ShardSplits:
    """PoolRoute's `shard_splits`: shard id -> its split (shards of one copy left out)."""

    splits: Mapping[bytes, ShardSplit] = attrs.field(converter=_read_only)
    #: Unix time, for migrations (not a config key; tests give their own clock).
    wall_clock: Callable[[], float] = attrs.field(default=time.time, eq=False, repr=False)

    def __hash__(self) -> int:  # a route is a value: hashable like the others
        return hash(tuple(self.splits.items()))

    @classmethod
    def parse(cls, value: object) -> ShardSplits:
        if not isinstance(value, dict):
            raise Invalid("ShardSplitter: config is not an object")
        splits = {}
        for shard, split_value in value.items():
            split = _parse_split(shard, split_value)
            if split.migrating or split.new_size != 1:
                splits[shard.encode()] = split
        return cls(splits)

    def split_of(self, key: bytes) -> tuple[int, ShardSplit] | None:
        """Where `key`'s shard id ends in it, and its shard's split; None if not split."""
        routing = routing_key(key)
        span = shard_id_end(routing)
        if span is None:
            return None
        start, end = span
        split = self.splits.get(routing[start:end])
        if split is None:
            return None
        return len(split_routing_prefix(key)[0]) + end, split

    def splits_any(self, keys: tuple[bytes, ...]) -> bool:
        return any(self.split_of(key) is not None for key in keys)

    def route(self, request: Request, ctx: RouteContext, route_one: RouteOne) -> Pending:
        """Route `request` to its copy (or, a delete, to every copy) through `route_one`."""
        found = None
        if not (request.op in META and b"b" in request.args):  # base64 keys pass as they are
            found = self.split_of(request.key)
        if found is None:
            return route_one(request, ctx)
        end, split = found
        size = split.size(self.wall_clock(), ctx.host_id) if split.migrating else split.new_size
        if size == 1:
            return route_one(request, ctx)
        if request.op in _DELETES and split.fanout_deletes:
            pending = route_one(request, ctx)
            for offset in range(1, size):
                copy = _copy(request, end, offset)
                ctx.background.start(_NAME, partial(route_one, copy, ctx))
            return pending
        offset = ctx.host_id % size
        if offset == 0:
            return route_one(request, ctx)
        copy = _copy(request, end, offset)
        pending = route_one(copy, ctx)
        key = request.key
        if request.op in GET_LIKE:
            # The client sees its own key in the VALUE line, not the copy's.
            return sequence(pending, partial(own_value_key, key=key), name=_NAME)
        if request.op in META and b"k" in request.args:
            return sequence(pending, partial(own_meta_key, sent=copy.key, key=key), name=_NAME)
        return pending


def _copy(request: Request, shard_end: int, offset: int) -> Request:
    """`request` for copy `offset` of its shard: the suffix right after the shard id."""
    key = request.key
    copy_key = key[:shard_end] + split_suffix(offset) + key[shard_end:]
    if request.keys is not None:
        return request.with_keys([copy_key])
    return request.with_key(copy_key)


def check_shard_splits(value: object) -> ShardSplits:
    return ShardSplits.parse(value)
