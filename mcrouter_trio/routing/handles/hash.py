"""Hash-based selection: PoolRoute (a pool's servers) and HashRoute (any children).

PoolRoute also takes twemproxy's distributions as hash functions (an extension:
mcrouter has none of them): `Ketama`, `Modula` and `Random`, with nutcracker's
key hash, `hash_tag`, server weights and server names, so that a key lands on
the server nutcracker would pick (`hashing.twemproxy_selector`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing import (
    DISTRIBUTIONS,
    KEY_HASHES,
    make_selector,
    routing_key,
    server_name,
    twemproxy_selector,
)
from mcrouter_trio.hashing._buckets import Bucketizer
from mcrouter_trio.hashing._furc import CH3_MAX_N
from mcrouter_trio.hashing._selector import avoiding
from mcrouter_trio.messages import META, Op, Pending, Request, Result, error_reply
from mcrouter_trio.protocol import meta_routing_key
from mcrouter_trio.routing._base import (
    OverChildren,
    Route,
    RouteContext,
    SplitRouting,
    default_reply,
)
from mcrouter_trio.routing._checks import (
    Invalid,
    check_int,
    check_str,
    check_weight_numbers,
    check_weight_range,
    describe,
)
from mcrouter_trio.routing._ejection import EjectionWatch, Ejector, PoolEjection, RingBuilder
from mcrouter_trio.routing._multiget import route_partitioned
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing.handles._asynclog import route_spooling_failures
from mcrouter_trio.routing.handles._shard_splits import ShardSplits, check_shard_splits
from mcrouter_trio.routing.handles._slow_warmup import SlowWarmUp
from mcrouter_trio.routing.handles.destination import DestinationRoute, pool_destinations
from mcrouter_trio.routing.handles.failover import LatestRoute
from mcrouter_trio.routing.handles.rate_limit import RateLimits, check_rates
from mcrouter_trio.routing.handles.shadow import ShadowSpec, check_shadow_policy, shadowed

#: mcrouter's hash function names (case-sensitive, as in mcrouter).
MCROUTER_HASH_FUNCS: Final = frozenset({"Ch3", "Crc32", "WeightedCh3", "ConstShard"})
#: PoolRoute's twemproxy hash functions -> nutcracker's `distribution`.
TWEMPROXY_HASH_FUNCS: Final = {name.capitalize(): name for name in sorted(DISTRIBUTIONS)}
#: mcrouter's `Latest`: not a hash but LatestRoute over the pool's servers.
LATEST: Final = "Latest"
#: Every PoolRoute hash function name.
HASH_FUNCS: Final = MCROUTER_HASH_FUNCS | TWEMPROXY_HASH_FUNCS.keys() | {LATEST}
#: nutcracker's default `hash`.
DEFAULT_KEY_HASH: Final = "fnv1a_64"
#: The one command PoolRoute spools on failure (bound once: checked per request).
_DELETE: Final = Op.DELETE
#: The hash options that only twemproxy's distributions take.
_TWEMPROXY_OPTIONS: Final = ("key_hash", "hash_tag", "server_weights", "server_names")


def _check_name_in(value: object, known: frozenset[str] | Sequence[str], what: str) -> str:
    name = check_str(value)
    if name not in known:
        raise Invalid(f"unknown {what} '{name}' (known: {', '.join(sorted(known))})")
    return name


def check_hash_func(value: object) -> str:
    return _check_name_in(value, HASH_FUNCS, "hash function")


def check_mcrouter_hash_func(value: object) -> str:
    name = check_str(value)
    if name in TWEMPROXY_HASH_FUNCS or name == LATEST:
        raise Invalid(f"hash function '{name}' is only available in PoolRoute's 'hash'")
    return _check_name_in(name, MCROUTER_HASH_FUNCS, "hash function")


def check_failover_count(value: object) -> int:
    return check_int(value, 0)


def check_optional_weights(value: object) -> tuple[float, ...] | None:
    return None if value is None else check_weight_numbers(value)


def check_key_hash(value: object) -> str:
    return _check_name_in(value, sorted(KEY_HASHES), "key hash")


def check_hash_tag(value: object) -> str:
    tag = check_str(value)
    if len(tag.encode()) != 2:
        raise Invalid(f'a hash tag is two characters, such as "{{}}", got {describe(tag)}')
    return tag


def check_server_weights(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected an array of integers, got {describe(value)}")
    return tuple(check_int(item, 1, 2**31 - 1) for item in value)


def check_server_names(value: object) -> tuple[str | None, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected an array of names (or null), got {describe(value)}")
    names = tuple(None if item is None else check_str(item) for item in value)
    if any(name == "" for name in names):
        raise Invalid("a server name cannot be empty")
    return names


@attrs.frozen
class HashSpec:
    """PoolRoute's `hash`: a function name, or an object with its options.

    mcrouter's functions take `salt` and `weights`; twemproxy's (`Ketama`,
    `Modula`, `Random`) take `key_hash`, `hash_tag`, `server_weights` and
    `server_names` instead. `Latest` (mcrouter's LatestRoute over the pool's
    servers) also takes `failover_count` and `thread_local_failover`.
    """

    hash_func: str = config_field(default="Ch3", check=check_hash_func)
    salt: str = ""
    weights: tuple[float, ...] | None = config_field(default=None, check=check_optional_weights)
    #: nutcracker's `hash`: the key hash of a twemproxy distribution.
    key_hash: str | None = config_field(default=None, check=check_key_hash)
    hash_tag: str | None = config_field(default=None, check=check_hash_tag)
    #: nutcracker's server weights (positive integers), one per server; default 1.
    server_weights: tuple[int, ...] | None = config_field(default=None, check=check_server_weights)
    #: nutcracker's server names (`host:port:weight name`); null: the default name.
    server_names: tuple[str | None, ...] | None = config_field(
        default=None, check=check_server_names
    )
    #: LatestRoute's options, for `Latest`.
    failover_count: int = config_field(default=5, check=check_failover_count)
    thread_local_failover: bool = False

    def __attrs_post_init__(self) -> None:
        if self.is_twemproxy:
            if self.salt or self.weights is not None:
                raise Invalid(
                    f"'salt' and 'weights' do not apply to {self.hash_func};"
                    " twemproxy's weights are 'server_weights'"
                )
        else:
            given = [name for name in _TWEMPROXY_OPTIONS if getattr(self, name) is not None]
            if given:
                raise Invalid(
                    f"{', '.join(repr(name) for name in given)} only apply to the hash"
                    f" functions {', '.join(sorted(TWEMPROXY_HASH_FUNCS))}"
                )

    @property
    def is_twemproxy(self) -> bool:
        return self.hash_func in TWEMPROXY_HASH_FUNCS

    @classmethod
    def from_string(cls, text: str) -> HashSpec:
        """`"hash": "Crc32"`: the function name alone."""
        return cls(check_hash_func(text))

    def selector_for(self, pool: PoolSpec, ejected: Collection[int] = ()) -> Callable[[bytes], int]:
        """This hash's twemproxy selector over `pool`'s servers (`Invalid` if they disagree),
        without the `ejected` ones (indexes).

        Every slot must be a server: nutcracker's distributions know only servers
        (ketama places each by its name), and mcrouter has none of them.
        """
        for index, slot in enumerate(pool.slots):
            if not isinstance(slot, ServerSpec):
                raise Invalid(
                    f"{self.hash_func} hashes over servers only, but pool '{pool.name}' has"
                    f" a route at servers[{index}]"
                )
        servers = pool.servers
        count = len(servers)
        for option in ("server_weights", "server_names"):
            given = getattr(self, option)
            if given is not None and len(given) != count:
                raise Invalid(
                    f"'{option}' has {len(given)} entries but pool '{pool.name}'"
                    f" has {count} servers"
                )
        weights = self.server_weights or (1,) * count
        given_names = self.server_names or (None,) * count
        names = [
            name if name is not None else server_name(server.host, server.port)
            for name, server in zip(given_names, servers, strict=True)
        ]
        distribution = TWEMPROXY_HASH_FUNCS[self.hash_func]
        if distribution == "ketama":
            seen: dict[str, int] = {}
            for index, name in enumerate(names):
                if name in seen:
                    raise Invalid(
                        f"servers #{seen[name]} and #{index} of pool '{pool.name}' have the"
                        f" same ketama name '{name}'; give them 'server_names'"
                    )
                seen[name] = index
        return twemproxy_selector(
            distribution,
            self.key_hash or DEFAULT_KEY_HASH,
            names,
            weights,
            (self.hash_tag or "").encode(),
            ejected,
        )


def hashed_key(request: Request) -> bytes:
    """What mcrouter hashes: the routing key (no routing prefix, nothing after `|#|`)."""
    key = meta_routing_key(request) if request.op in META else request.key
    return routing_key(key)


def whole_key(request: Request) -> bytes:
    """What nutcracker hashes: the key as the server gets it (then its hash tag)."""
    return meta_routing_key(request) if request.op in META else request.key


def _selector(
    hash_func: str, n: int, salt: str, weights: tuple[float, ...] | None
) -> Callable[[bytes], int]:
    return make_selector(hash_func, n, salt=salt.encode(), weights=weights)


def _route_whole_by(
    children: tuple[Route, ...],
    select: Callable[[bytes], int],
    key_of: Callable[[bytes], bytes],
    request: Request,
    ctx: RouteContext,
    split: SplitRouting,
) -> Pending | None:
    """A multi-key get sent whole to each child, with the keys that hash to it."""
    keys = request.keys
    if not children or not keys:
        return None
    if len(children) == 1:
        return children[0].route_whole(request, ctx, split)
    return route_partitioned(children, lambda key: select(key_of(key)), request, ctx, split)


def check_total_buckets(value: object) -> int:
    return check_int(value, 1, CH3_MAX_N)


def check_buckets_by_prefix(value: object) -> tuple[tuple[str, int], ...]:
    """`total_buckets_by_prefix`: an object of prefix -> bucket count (range checked later)."""
    if not isinstance(value, dict):
        raise Invalid(f"expected an object of prefix to bucket count, got {describe(value)}")
    for prefix, count in value.items():
        if type(count) is not int:
            raise Invalid(f"{prefix}: expected an integer bucket count, got {describe(count)}")
    return tuple(value.items())


def _bucket_of_key(buckets: Bucketizer, key: bytes) -> bytes:
    """What a bucketized pool hashes for `key`: its bucket number, in decimal."""
    return b"%d" % buckets.bucket(routing_key(key))


def _bucket_of_request(buckets: Bucketizer, request: Request) -> bytes:
    return b"%d" % buckets.bucket(hashed_key(request))


def _as_is(key: bytes) -> bytes:
    return key


def _first(key: bytes) -> int:
    return 0


def _no_children(key: bytes) -> int:
    raise AssertionError("a route without children never selects")


@route_type("HashRoute", shorthand="children")
@attrs.frozen
class HashRoute(OverChildren):
    """Picks one child by hashing the routing key (mcrouter HashRoute)."""

    children: tuple[Route, ...]
    hash_func: str = config_field(default="Ch3", check=check_mcrouter_hash_func)
    salt: str = ""
    weights: tuple[float, ...] | None = config_field(default=None, check=check_optional_weights)
    #: Only named in the error of a route without children, as mcrouter's (empty
    #: unless the config gives one: "HashRoute with empty children, name: ").
    name: str = ""
    select: Callable[[bytes], int] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        select: Callable[[bytes], int] = _no_children
        if self.weights is not None:
            check_weight_range(self.weights, len(self.children))
        if self.children:
            select = _selector(self.hash_func, len(self.children), self.salt, self.weights)
        object.__setattr__(self, "select", select)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        children = self.children
        if len(children) == 1:
            return children[0].route(request, ctx)
        if not children:
            return Pending(
                error_reply(Result.LOCAL_ERROR, f"HashRoute with empty children, name: {self.name}")
            )
        return children[self.select(hashed_key(request))].route(request, ctx)

    def selected_index(self, request: Request) -> int:
        """The child this route picks for `request` (-1 with no children)."""
        return self.select(hashed_key(request)) if self.children else -1

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return _route_whole_by(self.children, self.select, routing_key, request, ctx, split)


@route_type("PoolRoute", shorthand="pool")
@attrs.frozen
class PoolRoute:
    """Routes to one server of a pool chosen by a hash (default Ch3, or twemproxy's).

    `shadows` copy some requests of some server slots elsewhere (see `shadow.py`);
    `rates` limit each command class with a token bucket (see `rate_limit.py`):
    over the limit, the default reply. With `bucketize`, a key's server is chosen
    by hashing its bucket number (`Ch3(routing key, total_buckets)`, in decimal)
    with the pool's hash, as mcrouter's BucketHashSelector does;
    `total_buckets_by_prefix` keeps the keys under a prefix in that prefix's few
    buckets (`hashing/_buckets.py`).
    The hash function `Latest` makes it mcrouter's LatestRoute over the pool's
    servers (`salt`, `weights`, `failover_count`, `thread_local_failover` from
    `hash`; the pool's `weights` otherwise), as mcrouter's PoolRoute builds it.
    Deletes its server fails are spooled (`asynclog`, see `handles/_asynclog.py`),
    under `asynclog_name` (default: the pool's name). A pool with `auto_eject_hosts`
    takes failing servers out of its ring for a while (see `routing/_ejection.py`).
    With `slow_warmup`, a server whose hit rate dropped gets only a share of the
    gets until it is warm again (see `_slow_warmup.py`). With `shard_splits`, a key
    of a split shard goes to one of its copies, a delete to all (`_shard_splits.py`).
    """

    pool: PoolSpec
    hash: HashSpec = HashSpec()
    asynclog: bool = True
    asynclog_name: str | None = None
    shadows: tuple[ShadowSpec, ...] = ()
    shadow_policy: str = config_field(default="default", check=check_shadow_policy)
    rates: RateLimits | None = config_field(default=None, check=check_rates)
    #: mcrouter's McBucketRoute: keys are hashed into `total_buckets` buckets (Ch3),
    #: and the bucket number, not the key, picks the server.
    bucketize: bool = False
    total_buckets: int | None = config_field(default=None, check=check_total_buckets)
    #: Prefix -> its own bucket count (mcrouter's McBucketRoute `total_buckets_by_prefix`).
    total_buckets_by_prefix: tuple[tuple[str, int], ...] = config_field(
        default=(), check=check_buckets_by_prefix
    )
    bucketization_keyspace: str | None = None
    slow_warmup: SlowWarmUp | None = None
    shard_splits: ShardSplits | None = config_field(default=None, check=check_shard_splits)
    #: mcrouter spreads a split shard's requests by their fbid or id1, which
    #: memcached requests do not have: read, and without effect.
    split_shard_fanout: int = config_field(default=0, check=check_int)
    #: This proxy host's id and the number of workers (for `Latest`): the config
    #: cannot set them.
    host_id: int = config_field(default=0, from_build="host_id")
    num_proxies: int = config_field(default=1, from_build="num_proxies")
    #: Each slot's server route (None: a route slot, whose deletes are never spooled),
    #: and the routes a slot sends to (shadowed).
    _destinations: tuple[DestinationRoute | None, ...] = attrs.field(
        init=False, repr=False, eq=False
    )
    _children: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)
    _select: Callable[[bytes], int] = attrs.field(init=False, repr=False, eq=False)
    _key_of: Callable[[Request], bytes] = attrs.field(init=False, repr=False, eq=False)
    _routing_key: Callable[[bytes], bytes] = attrs.field(init=False, repr=False, eq=False)
    #: Whether failed deletes are spooled (`asynclog`, not with `Latest`: whose
    #: server failed is LatestRoute's to know).
    _spools: bool = attrs.field(init=False, repr=False, eq=False)
    #: Its hold on the pool's ejection state (None: the pool never ejects).
    ejector: Ejector | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        buckets = self._bucketizer()
        object.__setattr__(self, "_spools", self.asynclog)
        slots = pool_destinations(self.pool)
        destinations = tuple(slot if isinstance(slot, DestinationRoute) else None for slot in slots)
        if self.slow_warmup is not None:
            slots = tuple(map(self.slow_warmup.around, slots))  # route slots too, as mcrouter
        children = shadowed(slots, self.shadows, buckets)
        object.__setattr__(self, "_destinations", destinations)
        object.__setattr__(self, "_children", children)
        select: Callable[[bytes], int] = _no_children
        if self.hash.is_twemproxy:
            if buckets is not None:
                raise Invalid(f"'bucketize' does not apply to {self.hash.hash_func}")
            if self.pool.weights is not None:
                raise Invalid(
                    f"pool '{self.pool.name}' has 'weights' (WeightedCh3's);"
                    f" {self.hash.hash_func} takes the hash's 'server_weights'"
                )
            select = self.hash.selector_for(self.pool)
            key_of, keys_routing = whole_key, _as_is
        elif self.hash.hash_func == LATEST:
            self._become_latest(children)
            return
        else:
            weights = self.hash.weights if self.hash.weights is not None else self.pool.weights
            hash_func = self.hash.hash_func
            if weights is not None and hash_func == "Ch3" and self.hash.weights is None:
                # A pool with `weights` defaults to WeightedCh3, as in mcrouter.
                hash_func = "WeightedCh3"
            if weights is not None:
                check_weight_range(weights, len(children))
            if children:
                select = _selector(hash_func, len(children), self.hash.salt, weights)
            key_of, keys_routing = hashed_key, routing_key
            if buckets is not None:
                key_of = partial(_bucket_of_request, buckets)
                keys_routing = partial(_bucket_of_key, buckets)
        ejector = None
        if self.pool.ejection is not None and len(children) > 1:
            build: RingBuilder
            if self.hash.is_twemproxy:
                build = partial(self.hash.selector_for, self.pool)
            else:
                build = partial(avoiding, select, len(children))
            servers = {
                index: destination
                for index, destination in enumerate(destinations)
                if destination is not None
            }
            state = PoolEjection(self.pool.name, servers, self.pool.ejection, build, select)
            ejector = Ejector((self.pool, self.hash), state)
            # A route slot is never ejected: only servers are watched.
            children = tuple(
                child if destinations[index] is None else EjectionWatch(child, index, ejector)
                for index, child in enumerate(children)
            )
            object.__setattr__(self, "_children", children)
            select = ejector.select
        object.__setattr__(self, "ejector", ejector)
        object.__setattr__(self, "_select", select)
        object.__setattr__(self, "_key_of", key_of)
        object.__setattr__(self, "_routing_key", keys_routing)

    def _become_latest(self, children: tuple[Route, ...]) -> None:
        """One child, LatestRoute over the servers: every request takes it."""
        if self.bucketize:
            raise Invalid("'bucketize' does not apply to Latest")
        weights = self.hash.weights if self.hash.weights is not None else self.pool.weights
        latest = LatestRoute(
            children,
            self.hash.failover_count,
            weights,
            self.hash.salt,
            self.hash.thread_local_failover,
            host_id=self.host_id,
            num_proxies=self.num_proxies,
        )
        object.__setattr__(self, "_children", (latest,))
        object.__setattr__(self, "_spools", False)
        object.__setattr__(self, "ejector", None)
        object.__setattr__(self, "_select", _first)
        object.__setattr__(self, "_key_of", hashed_key)
        object.__setattr__(self, "_routing_key", routing_key)

    def _bucketizer(self) -> Bucketizer | None:
        """The pool's buckets if it is bucketized."""
        if not self.bucketize:
            return None
        total = self.total_buckets
        if total is None:
            raise Invalid("McBucketRoute: no total number of buckets")
        by_prefix = dict(self.total_buckets_by_prefix)
        for count in by_prefix.values():
            if not 0 < count <= total:
                raise Invalid(f"Bucket count should be in range (0, {total}], got {count}")
        if self.bucketization_keyspace is None:
            raise Invalid("McBucketRoute: must have bucketization_keyspace")
        return Bucketizer(total, by_prefix)

    def selected_index(self, request: Request) -> int:
        """The server this route picks for `request` (-1 with no servers)."""
        return self._select(self._key_of(request)) if self._children else -1

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self.shard_splits is not None:
            return self.shard_splits.route(request, ctx, self._route_one)
        return self._route_one(request, ctx)

    def _route_one(self, request: Request, ctx: RouteContext) -> Pending:
        if self.rates is not None and not self.rates.allow(request, ctx):
            return Pending(default_reply(request))
        children = self._children
        if len(children) == 1:
            index = 0
        elif children:
            index = self._select(self._key_of(request))
        else:
            return Pending(
                error_reply(
                    Result.LOCAL_ERROR, f"HashRoute with empty children, name: {self.pool.name}"
                )
            )
        child = children[index]
        if request.op is _DELETE and self._spools:
            spool = ctx.asynclog
            if spool is not None:
                name = self.asynclog_name or self.pool.name
                destination = self._destinations[index]
                if destination is not None:
                    return route_spooling_failures(child, destination, request, ctx, spool, name)
        return child.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        if self.rates is not None:
            return None  # each key takes a token
        if self.shard_splits is not None and self.shard_splits.splits_any(request.keys or ()):
            return None  # a split shard's keys go to their copies one by one
        return _route_whole_by(self._children, self._select, self._routing_key, request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return self._children
