"""KeySplitRoute: spread a hot key over replica keys, one replica per proxy host."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing._keys import HASH_STOP
from mcrouter_trio.messages import META, Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import check_bool, check_int
from mcrouter_trio.routing._combinators import quorum, sequence
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing.handles.modify import own_meta_key, own_value_key

_NAME: Final = "KeySplitRoute"
#: Between a key and its replica number: `key::3`.
REPLICA_SEPARATOR: Final = b"::"
#: mcrouter leaves a key alone when `key::999` would not fit in 255 bytes.
_MAX_AUGMENTED: Final = 255 - len(REPLICA_SEPARATOR) - 3
_GETS: Final = frozenset({Op.GET, Op.MG})
_SETS: Final = frozenset({Op.SET, Op.MS})
_DELETES: Final = frozenset({Op.DELETE, Op.MD})


def _check_replicas(value: object) -> int:
    return check_int(value, 2, 1000)


def replica_key(key: bytes, replica: int) -> bytes:
    """Replica `replica`'s key: `key::<n>` (before a `|#|` hash stop); replica 0 is `key`."""
    if replica == 0:
        return key
    suffix = REPLICA_SEPARATOR + b"%d" % replica
    stop = key.find(HASH_STOP)
    return key + suffix if stop < 0 else key[:stop] + suffix + key[stop:]


def _is_hit(reply: Reply) -> bool:
    return reply.result is Result.FOUND


def _last(replies: list[Reply]) -> Reply:
    return replies[-1]


@route_type(_NAME)
@attrs.frozen
class KeySplitRoute:
    """Each proxy host reads a key as its own replica `key::<host id % replicas>` (mcrouter).

    A hot key's reads are spread over `replicas` keys, which the `destination`
    (usually a PoolRoute) hashes to different servers; replica 0 is the key itself.
    get: this host's replica, or with `first_hit` every replica at once and the first
    hit (else the last reply). set: this host's replica, and with `all_sync` every
    other replica in the background. delete: every replica (the others in the
    background). Other commands: this host's replica. Meta commands follow their
    classic twins; multi-gets go key by key. A key too long for `::999` is not split.
    """

    destination: Route
    replicas: int = config_field(check=_check_replicas)
    all_sync: bool = config_field(check=check_bool)
    first_hit: bool = False
    #: This proxy host's id: the config cannot set it.
    host_id: int = config_field(default=0, from_build="host_id")

    @property
    def replica(self) -> int:
        """This host's replica number."""
        return self.host_id % self.replicas

    def _one(self, request: Request, replica: int, ctx: RouteContext) -> Pending:
        if replica == 0:
            return self.destination.route(request, ctx)
        key = request.key
        sent = replica_key(key, replica)
        if request.keys is not None:
            pending = self.destination.route(request.with_keys([sent]), ctx)
            # The client sees its own key, not the replica's.
            return sequence(pending, partial(own_value_key, key=key), name=_NAME)
        pending = self.destination.route(request.with_key(sent), ctx)
        if request.op in META and b"k" in request.args:
            return sequence(pending, partial(own_meta_key, sent=sent, key=key), name=_NAME)
        return pending

    def _all(self, request: Request, ctx: RouteContext) -> Pending:
        mine = self.replica
        for replica in range(self.replicas):
            if replica != mine:
                ctx.background.start(_NAME, partial(self._one, request, replica, ctx))
        return self._one(request, mine, ctx)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        if op in _GETS or op in _SETS or op in _DELETES:
            if len(request.key) > _MAX_AUGMENTED:
                return self.destination.route(request, ctx)
            if op in _DELETES or (op in _SETS and self.all_sync):
                return self._all(request, ctx)
            if op in _GETS and self.first_hit:
                every = [self._one(request, replica, ctx) for replica in range(self.replicas)]
                return quorum(every, 1, _is_hit, _last, name=_NAME)
        return self._one(request, self.replica, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key gets its replica key

    def targets(self) -> Sequence[Route]:
        return (self.destination,)
