"""Rate limits: token buckets per class of command (RateLimitRoute, PoolRoute `rates`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import GET_LIKE, UPDATE_LIKE, Op, Pending, Request
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._checks import Invalid, describe
from mcrouter_trio.routing._registry import config_field, route_type

#: The command classes mcrouter limits (GetLike, UpdateLike, DeleteLike); meta
#: commands count as their classic twins. Others (arithmetic, touch) are never limited.
RATE_CLASSES: Final[Mapping[str, frozenset[Op]]] = {
    "gets": GET_LIKE | {Op.MG},
    "sets": UPDATE_LIKE,
    "deletes": frozenset({Op.DELETE, Op.MD}),
}


class TokenBucket:
    """`rate` tokens a second, at most `burst`; a request takes one (folly's TokenBucket).

    mcrouter starts its buckets empty when the config loads; this one starts full
    at its first request, which is the same once `burst / rate` seconds have passed
    and does not refuse the first requests after a (re)load.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp: float | None = None

    def take(self, now: float) -> bool:
        """Take a token at time `now` if there is one; whether there was."""
        stamp = self._stamp
        tokens = self._tokens
        if stamp is not None and now > stamp:
            tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        self._stamp = now if stamp is None or now > stamp else stamp
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


def _positive(settings: Mapping[str, object], name: str) -> float:
    value = settings[name]
    if type(value) not in (int, float):
        raise Invalid(f"{name} is not a number")
    number = float(value)  # type: ignore[arg-type]  # checked above
    if number <= 0:
        raise Invalid(f"{name} is nonpositive")
    return number


@attrs.frozen(eq=False)
class RateLimits:
    """`rates`: one token bucket per command class that has a `<class>_rate`.

    Holds mutable buckets: each route built from a config has its own, shared by
    every request routed through it (eq=False: two limiters are never equal).
    """

    buckets: Mapping[Op, TokenBucket]

    @classmethod
    def parse(cls, value: object) -> RateLimits:
        """`{"gets_rate": r, "gets_burst": b, "sets_rate": ..., "deletes_rate": ...}`."""
        if not isinstance(value, dict):
            raise Invalid(f"RateLimiter settings json is not an object, got {describe(value)}")
        buckets: dict[Op, TokenBucket] = {}
        for name, ops in RATE_CLASSES.items():
            if f"{name}_rate" not in value:
                continue
            rate = _positive(value, f"{name}_rate")
            # mcrouter: a burst that is not a number is ignored, a non-positive one refused.
            burst_value = value.get(f"{name}_burst")
            burst = rate
            if type(burst_value) in (int, float):
                burst = _positive(value, f"{name}_burst")
            bucket = TokenBucket(rate, burst)
            buckets.update(dict.fromkeys(ops, bucket))
        return cls(buckets)

    def allow(self, request: Request, ctx: RouteContext) -> bool:
        bucket = self.buckets.get(request.op)
        return bucket is None or bucket.take(ctx.now())


def check_rates(value: object) -> RateLimits:
    return RateLimits.parse(value)


@route_type("RateLimitRoute")
@attrs.frozen
class RateLimitRoute:
    """Sends to `target` while the command's bucket in `rates` has a token.

    Over the limit: `fallback` if given, else the default reply (a miss,
    NOT_STORED, NOT_FOUND: "nothing happened", not an error), as mcrouter does.
    """

    target: Route
    rates: RateLimits = config_field(check=check_rates)
    fallback: Route | None = None

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self.rates.allow(request, ctx):
            return self.target.route(request, ctx)
        if self.fallback is not None:
            return self.fallback.route(request, ctx)
        return Pending(default_reply(request))

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key takes a token

    def targets(self) -> Sequence[Route]:
        return (self.target,) if self.fallback is None else (self.target, self.fallback)
