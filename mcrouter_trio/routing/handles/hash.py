"""Hash-based selection: PoolRoute (a pool's servers) and HashRoute (any children)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import attrs

from mcrouter_trio.hashing import make_selector, routing_key
from mcrouter_trio.messages import META, Pending, Request, Result, error_reply
from mcrouter_trio.protocol import meta_routing_key
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_str, check_weights
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing._specs import PoolSpec
from mcrouter_trio.routing.handles.destination import pool_destinations

#: Hash function names (case-sensitive, as in mcrouter).
HASH_FUNCS: Final = frozenset({"Ch3", "Crc32", "WeightedCh3", "ConstShard"})


def check_hash_func(value: object) -> str:
    name = check_str(value)
    if name not in HASH_FUNCS:
        raise Invalid(f"unknown hash function '{name}' (known: {', '.join(sorted(HASH_FUNCS))})")
    return name


def check_optional_weights(value: object) -> tuple[float, ...] | None:
    return None if value is None else check_weights(value)


@attrs.frozen
class HashSpec:
    """PoolRoute's `hash`: a function name, or an object with salt and weights."""

    hash_func: str = config_field(default="Ch3", check=check_hash_func)
    salt: str = ""
    weights: tuple[float, ...] | None = config_field(default=None, check=check_optional_weights)

    @classmethod
    def from_string(cls, text: str) -> HashSpec:
        """`"hash": "Crc32"`: the function name alone."""
        return cls(check_hash_func(text))


def hashed_key(request: Request) -> bytes:
    key = meta_routing_key(request) if request.op in META else request.key
    return routing_key(key)


def _selector(
    hash_func: str, n: int, salt: str, weights: tuple[float, ...] | None
) -> Callable[[bytes], int]:
    return make_selector(hash_func, n, salt=salt.encode(), weights=weights)


@route_type("HashRoute", shorthand="children")
@attrs.frozen
class HashRoute:
    """Picks one child by hashing the routing key (mcrouter HashRoute)."""

    children: tuple[Route, ...]
    hash_func: str = config_field(default="Ch3", check=check_hash_func)
    salt: str = ""
    weights: tuple[float, ...] | None = config_field(default=None, check=check_optional_weights)
    name: str = "HashRoute"
    select: Callable[[bytes], int] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
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

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        children = self.children
        keys = request.keys
        if not children or not keys:
            return None
        if len(children) == 1:
            return children[0].route_whole(request, ctx, split)
        select = self.select
        chosen = select(routing_key(keys[0]))
        if any(select(routing_key(key)) != chosen for key in keys[1:]):
            return None
        return children[chosen].route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return self.children


@route_type("PoolRoute", shorthand="pool")
@attrs.frozen
class PoolRoute:
    """Routes to one server of a pool chosen by a consistent hash (default Ch3)."""

    pool: PoolSpec
    hash: HashSpec = HashSpec()
    _hash_route: HashRoute = attrs.field(init=False, repr=False, eq=False)

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

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return self._hash_route.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self._hash_route.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return self._hash_route.children
