"""Shadowing: a copy of some requests also goes to another route (ShadowRoute, PoolRoute `shadows`).

A shadow entry says which child slots it covers (`index_range`) and which keys
(`key_fraction_range` of SpookyHashV2-32 of the routing key, or an explicit
`keys_to_shadow` list), and what share of those requests (`requests_fraction`).
A shadowed request is sent to the normal child, whose reply the client gets,
and a copy goes to the shadow's `target` through the proxy's background work:
fire-and-forget, capped in flight, its reply dropped (mcrouter's DefaultShadowPolicy).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing import routing_key
from mcrouter_trio.hashing._buckets import Bucketizer
from mcrouter_trio.hashing._spooky import spooky_hash32
from mcrouter_trio.messages import META, Pending, Request
from mcrouter_trio.protocol import meta_routing_key
from mcrouter_trio.routing._base import KeyByKey, Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_str, describe
from mcrouter_trio.routing._registry import config_field, route_type

#: Also the name its copies go to the background work under, which caps them
#: (`--target-max-shadow-requests`).
SHADOW_NAME: Final = "ShadowRoute"
#: Shadow copies in flight per proxy worker before more are dropped (mcrouter's default).
DEFAULT_MAX_SHADOW_REQUESTS: Final = 1000
#: The largest SpookyHashV2-32 value: `key_fraction_range` is a share of it.
_HASH_MAX: Final = 0xFFFF_FFFF
#: mcrouter's only shadow policy: the shadow gets an exact copy, its reply is dropped.
SHADOW_POLICIES: Final = frozenset({"default"})


def _pair(value: object, what: str) -> tuple[object, object]:
    if not isinstance(value, list):
        raise Invalid(f"{what} is not an array")
    if len(value) != 2:
        raise Invalid(f"{what} size is not 2")
    return value[0], value[1]


def check_index_range(value: object) -> tuple[int, int]:
    start, end = _pair(value, "index_range")
    for bound in (start, end):
        if type(bound) is not int or bound < 0:
            raise Invalid(f"index_range: expected non-negative integers, got {describe(bound)}")
    assert isinstance(start, int) and isinstance(end, int)
    if start > end:
        raise Invalid("index_range start > end")
    return start, end


def check_key_fraction_range(value: object) -> tuple[float, float]:
    start, end = _pair(value, "key_fraction_range")
    for bound in (start, end):
        if type(bound) not in (int, float):
            raise Invalid(f"key_fraction_range: expected numbers, got {describe(bound)}")
    low, high = float(start), float(end)  # type: ignore[arg-type]  # checked above
    if not 0 <= low <= high <= 1:
        raise Invalid(f"invalid key_fraction_range [{low:g}, {high:g}]")
    return low, high


def check_keys_to_shadow(value: object) -> frozenset[bytes]:
    if not isinstance(value, list):
        raise Invalid("keys_to_shadow is not an array")
    return frozenset(check_str(key).encode() for key in value)


def check_requests_fraction(value: object) -> float:
    if type(value) not in (int, float):
        raise Invalid(f"requests_fraction is not a number, got {describe(value)}")
    return float(value)  # type: ignore[arg-type]  # checked above


def _ignored(value: object) -> None:
    return None


def check_shadow_policy(value: object) -> str:
    name = check_str(value)
    if name not in SHADOW_POLICIES:
        raise Invalid(f"Invalid shadow policy: {name}")
    return name


@attrs.frozen
class ShadowSpec:
    """One entry of `shadows`: where copies go and which requests are copied.

    `key_fraction_range_rv` and `index_range_rv` name mcrouter runtime variables
    (`--runtime-vars-file`), which this proxy does not have: they are accepted and
    the ranges given here apply.
    """

    target: Route
    index_range: tuple[int, int] = config_field(default=(0, 0), check=check_index_range)
    key_fraction_range: tuple[float, float] | None = config_field(
        default=None, check=check_key_fraction_range
    )
    keys_to_shadow: frozenset[bytes] = config_field(default=frozenset(), check=check_keys_to_shadow)
    requests_fraction: float = config_field(default=1.0, check=check_requests_fraction)
    key_fraction_range_rv: str | None = None
    index_range_rv: str | None = None
    #: Read by Meta's builds only: open-source mcrouter ignores a shadow's
    #: `shard_splits` (whatever its value), and so does this proxy (always None).
    shard_splits: None = config_field(default=None, check=_ignored)
    #: The hash bounds of `key_fraction_range`, truncated as mcrouter does.
    _low: int = attrs.field(init=False, repr=False, eq=False)
    _high: int = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        ranges = (self.index_range, self.key_fraction_range, self.key_fraction_range_rv)
        if self.keys_to_shadow and ranges != ((0, 0), None, None):
            raise Invalid(
                "Cannot mix nonempty keys_to_shadow array with index_range,"
                " key_fraction_range, or key_fraction_range_rv"
            )
        low, high = self.key_fraction_range or (0.0, 0.0)
        object.__setattr__(self, "_low", int(low * _HASH_MAX))
        object.__setattr__(self, "_high", int(high * _HASH_MAX))

    @classmethod
    def from_string(cls, text: str) -> ShadowSpec:
        raise Invalid(f"a shadow is an object with a 'target', got {describe(text)}")

    def covers(self, index: int) -> bool:
        """Whether the child in slot `index` is shadowed (every slot for `keys_to_shadow`)."""
        start, end = self.index_range
        return start <= index < end or bool(self.keys_to_shadow)

    def bucket_range(self, total_buckets: int) -> tuple[int, int]:
        """The buckets `key_fraction_range` covers in a bucketized pool (none if not given)."""
        if self.key_fraction_range is None:
            return 1, 0  # mcrouter's empty range
        low, high = self.key_fraction_range
        return int(low * (total_buckets - 1)), int(high * (total_buckets - 1))

    def wants(self, key: bytes, ctx: RouteContext, in_buckets: bool | None = None) -> bool:
        """Whether a request whose routing key is `key` is copied to the target.

        In a bucketized pool, `in_buckets` says whether the key's bucket is in
        `bucket_range`, which then replaces the key hash's range.
        """
        if self.keys_to_shadow:
            if key not in self.keys_to_shadow:
                return False
        elif in_buckets is not None:
            if not in_buckets:
                return False
        elif not self._low <= spooky_hash32(key) <= self._high:
            return False
        fraction = self.requests_fraction
        return fraction >= 1.0 or ctx.rng.random() < fraction


def _routing_key(request: Request) -> bytes:
    return routing_key(meta_routing_key(request) if request.op in META else request.key)


@attrs.frozen
class ShadowedRoute:
    """One child with the shadows covering its slot: the client gets the child's reply.

    In a bucketized pool (`buckets`), key fractions are ranges of buckets.
    """

    normal: Route
    shadows: tuple[ShadowSpec, ...]
    buckets: Bucketizer | None = None
    _bucket_ranges: tuple[tuple[int, int], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        total = 0 if self.buckets is None else self.buckets.total
        ranges = tuple(shadow.bucket_range(total) for shadow in self.shadows)
        object.__setattr__(self, "_bucket_ranges", ranges)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        pending = self.normal.route(request, ctx)
        key = _routing_key(request)
        bucket = None if self.buckets is None else self.buckets.bucket(key)
        for shadow, (low, high) in zip(self.shadows, self._bucket_ranges, strict=True):
            in_buckets = None if bucket is None else low <= bucket <= high
            if shadow.wants(key, ctx, in_buckets):
                ctx.background.start(SHADOW_NAME, partial(shadow.target.route, request, ctx))
        return pending

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key is shadowed by its own hash

    def targets(self) -> Sequence[Route]:
        return (self.normal, *(shadow.target for shadow in self.shadows))


def shadowed(
    children: Sequence[Route], shadows: Sequence[ShadowSpec], buckets: Bucketizer | None = None
) -> tuple[Route, ...]:
    """`children` with each one wrapped in the shadows covering its slot (if any)."""
    out: list[Route] = []
    for index, child in enumerate(children):
        covering = tuple(shadow for shadow in shadows if shadow.covers(index))
        out.append(ShadowedRoute(child, covering, buckets) if covering else child)
    return tuple(out)


@route_type(SHADOW_NAME)
@attrs.frozen
class ShadowRoute(KeyByKey):
    """`children`, each with the `shadows` that cover its slot (mcrouter ShadowRoute).

    Like mcrouter's, it stands for a list of routes: where one route is expected
    it must have exactly one child; in a list of children it adds all of them.
    """

    children: tuple[Route, ...]
    shadows: tuple[ShadowSpec, ...] = ()
    shadow_policy: str = config_field(default="default", check=check_shadow_policy)
    _routes: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_routes", shadowed(self.children, self.shadows))

    def as_list(self) -> tuple[Route, ...]:
        """The routes this stands for: each child, shadowed where a shadow covers it."""
        return self._routes

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if len(self._routes) != 1:
            raise Invalid(f"{len(self._routes)} RouteHandles in list, expected 1")
        return self._routes[0].route(request, ctx)

    def targets(self) -> Sequence[Route]:
        return self._routes
