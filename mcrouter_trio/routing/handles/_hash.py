"""Hash-based selection: PoolRoute (a pool's servers) and HashRoute (any children)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from mcrouter_trio.hashing import make_selector, routing_key
from mcrouter_trio.messages import META, Pending, Request, Result, error_reply
from mcrouter_trio.protocol import meta_routing_key
from mcrouter_trio.routing._base import Route, RouteContext
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing.handles._destination import DestinationRoute


@attrs.frozen
class HashSpec:
    """PoolRoute's `hash`: a function name, or an object with salt and weights."""

    hash_func: str = "Ch3"
    salt: str = ""
    weights: tuple[float, ...] | None = None


def hashed_key(request: Request) -> bytes:
    key = meta_routing_key(request) if request.op in META else request.key
    return routing_key(key)


def _selector(
    hash_func: str, n: int, salt: str, weights: tuple[float, ...] | None
) -> Callable[[bytes], int]:
    return make_selector(hash_func, n, salt=salt.encode(), weights=weights)


@attrs.frozen
class HashRoute:
    """Picks one child by hashing the routing key (mcrouter HashRoute)."""

    children_: tuple[Route, ...]
    hash_func: str = "Ch3"
    salt: str = ""
    weights: tuple[float, ...] | None = None
    name: str = "HashRoute"
    select: Callable[[bytes], int] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.children_:
            select = _selector(self.hash_func, len(self.children_), self.salt, self.weights)
            object.__setattr__(self, "select", select)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if not self.children_:
            return Pending(
                error_reply(Result.LOCAL_ERROR, f"HashRoute with empty children, name: {self.name}")
            )
        if len(self.children_) == 1:
            return self.children_[0].route(request, ctx)
        return self.children_[self.select(hashed_key(request))].route(request, ctx)

    def children(self) -> list[Route]:
        return list(self.children_)


def pool_destinations(pool: PoolSpec) -> tuple[DestinationRoute, ...]:
    """`Pool|A`: one destination route per server of the pool, in order."""
    return tuple(DestinationRoute(server, pool.keep_routing_prefix) for server in pool.servers)


@attrs.frozen
class PoolRoute:
    """Routes to one server of a pool chosen by a consistent hash (default Ch3)."""

    pool: PoolSpec
    hash: HashSpec = HashSpec()
    _hash_route: HashRoute = attrs.field(init=False, repr=False, eq=False)
    _servers: tuple[ServerSpec, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        weights = self.hash.weights if self.hash.weights is not None else self.pool.weights
        hash_func = self.hash.hash_func
        if weights is not None and self.hash.hash_func == "Ch3" and self.hash.weights is None:
            # A pool with `weights` defaults to WeightedCh3, as in mcrouter.
            hash_func = "WeightedCh3"
        inner = HashRoute(
            pool_destinations(self.pool), hash_func, self.hash.salt, weights, self.pool.name
        )
        object.__setattr__(self, "_hash_route", inner)
        object.__setattr__(self, "_servers", self.pool.servers)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        key = request.key
        if key[:1] != b"/" and request.op not in META:
            # The common case, without the HashRoute and DestinationRoute layers: a
            # key with no routing prefix to strip, hashed as it is.
            servers = self._servers
            if len(servers) == 1:
                return ctx.send(servers[0], request)
            if servers:
                return ctx.send(servers[self._hash_route.select(routing_key(key))], request)
        return self._hash_route.route(request, ctx)

    def route_whole(self, request: Request, ctx: RouteContext) -> Pending | None:
        """A multi-key get sent as it is, if every key hashes to one server; else None.

        Its reply is then what routing each key and merging the replies would give.
        """
        keys = request.keys
        servers = self._servers
        if not keys or not servers or any(key[:1] == b"/" for key in keys):
            return None  # routing prefixes are stripped per key: the general path
        if len(servers) == 1:
            return ctx.send(servers[0], request)
        select = self._hash_route.select
        chosen = select(routing_key(keys[0]))
        if any(select(routing_key(key)) != chosen for key in keys[1:]):
            return None
        return ctx.send(servers[chosen], request)

    def children(self) -> list[Route]:
        return self._hash_route.children()
