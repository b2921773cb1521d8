"""Slow warm-up of cold servers (PoolRoute `slow_warmup`, mcrouter's SlowWarmUpRoute).

Each server of the pool counts the hits and misses it answers. While its hit rate
is low (below `enable_threshold`, until it climbs above `disable_threshold`) the
server is warming up: a get reaches it only with probability
`start + step * hit rate`, otherwise the get goes straight to `failoverTarget`
(usually NullRoute: a miss at once instead of a round trip to a cold cache).
Other commands always reach the server, and their replies count too (a delete's
DELETED is a hit, NOT_FOUND a miss). Before `min_requests` replies are counted
the hit rate is taken as 1: a server is warm until proven cold.

The counts are kept for the life of the route, as mcrouter keeps them per route
handle: they start over when the config is reloaded, and never decay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import GET_LIKE, Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, describe
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._registry import config_field

_NAME: Final = "SlowWarmUpRoute"
#: The commands a warming-up server may be spared (mcrouter's GetLike; `mg` is a get).
_GETS: Final = GET_LIKE | {Op.MG}
#: mcrouter's `isHitResult` and `isMissResult`.
_HITS: Final = frozenset({Result.FOUND, Result.DELETED, Result.TOUCHED})
_MISS: Final = Result.NOTFOUND


def _number(settings: Mapping[str, object], name: str) -> float:
    value = settings[name]
    if type(value) not in (int, float):
        raise Invalid(f"SlowWarmUpSettings: '{name}' must be a number, but was {describe(value)}")
    return float(value)  # type: ignore[arg-type]  # checked above


def _fraction(settings: Mapping[str, object], name: str) -> float:
    if name not in settings:
        raise Invalid(f"SlowWarmUpSettings: Couldn't find '{name}' in config")
    value = _number(settings, name)
    if not 0.0 <= value <= 1.0:
        raise Invalid(f"SlowWarmUpSettings: '{name}' must be a double in [0,1] range")
    return value


@attrs.frozen
class SlowWarmUpSettings:
    """`slow_warmup.settings`, with mcrouter's defaults and bounds."""

    #: Below this hit rate a server starts warming up.
    enable_threshold: float = 0.7
    #: Above this hit rate a warming-up server is warm again (> enable_threshold).
    disable_threshold: float = 0.9
    #: The share of gets a warming-up server gets at a hit rate of 0.
    start: float = 0.1
    #: What each unit of hit rate adds to that share.
    step: float = 1.0
    #: Replies counted before the hit rate means anything.
    min_requests: int = 100

    @classmethod
    def parse(cls, value: object) -> SlowWarmUpSettings:
        """mcrouter's SlowWarmUpRouteSettings(json): both thresholds required, the rest optional."""
        if not isinstance(value, dict):
            raise Invalid("'settings' in slow_warmup must be a json object.")
        enable = _fraction(value, "enable_threshold")
        disable = _fraction(value, "disable_threshold")
        if not enable < disable:
            raise Invalid(
                "SlowWarmUpSettings: "
                "'enable_threshold' must be strictly less than 'disable_threshold'."
            )
        defaults = cls()
        start, step, min_requests = defaults.start, defaults.step, defaults.min_requests
        if "start" in value:
            start = _number(value, "start")
            if not 0.0 < start < 1.0:
                raise Invalid(
                    f"SlowWarmUpSettings: 'start' must be a double in (0,1) range, but was {start}"
                )
        if "step" in value:
            step = _number(value, "step")
            if not 0.0 < step < 100.0:
                raise Invalid(
                    f"SlowWarmUpSettings: 'step' must be in the (0,100) range, but was {step}"
                )
        if "min_requests" in value:
            given = value["min_requests"]
            if type(given) is not int:
                raise Invalid(
                    "SlowWarmUpSettings: 'min_requests' must be an integer,"
                    f" but was {describe(given)}"
                )
            if given <= 0:
                raise Invalid(
                    "SlowWarmUpSettings: 'min_requests' must be an integer greater than 0"
                )
            min_requests = given
        return cls(enable, disable, start, step, min_requests)


def check_settings(value: object) -> SlowWarmUpSettings:
    return SlowWarmUpSettings.parse(value)


@attrs.frozen
class SlowWarmUp:
    """PoolRoute's `slow_warmup`: where spared gets go, and the settings."""

    failoverTarget: Route  # the config key's own spelling
    settings: SlowWarmUpSettings = config_field(default=SlowWarmUpSettings(), check=check_settings)

    @classmethod
    def from_string(cls, text: str) -> SlowWarmUp:
        raise Invalid("slow_warmup must be a json object")

    def around(self, server: Route) -> SlowWarmUpRoute:
        """`server` behind its own warm-up state."""
        return SlowWarmUpRoute(server, self.failoverTarget, self.settings)


class SlowWarmUpRoute:
    """One server of a pool with its hit and miss counts (not a config type).

    PoolRoute puts one around each server when `slow_warmup` is given; it is the
    only holder of its counts, which is why it is a plain object and not a value.
    """

    __slots__ = ("_count", "enabled", "failover", "hits", "misses", "settings", "target")

    def __init__(self, target: Route, failover: Route, settings: SlowWarmUpSettings) -> None:
        self.target = target
        self.failover = failover
        self.settings = settings
        self.hits = 0
        self.misses = 0
        #: Whether the server is warming up (as of the last get's check).
        self.enabled = False
        self._count = self._counted  # bound once, not per request

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        if total < self.settings.min_requests:
            return 1.0
        return self.hits / total

    def warming_up(self) -> bool:
        """Whether the server is cold; entering and leaving use different thresholds."""
        settings = self.settings
        threshold = settings.disable_threshold if self.enabled else settings.enable_threshold
        self.enabled = self.hit_rate() < threshold
        return self.enabled

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if request.op in _GETS and self.warming_up():
            settings = self.settings
            share = settings.start + self.hit_rate() * settings.step
            if ctx.rng.random() > share:
                return self.failover.route(request, ctx)
        pending = self.target.route(request, ctx)
        if ctx.dry_run:
            return pending  # made-up replies teach nothing
        return sequence(pending, self._count, name=_NAME)

    def _counted(self, reply: Reply) -> Reply:
        result = reply.result
        if result in _HITS:
            self.hits += 1
        elif result is _MISS:
            self.misses += 1
        return reply

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key is a get of its own, counted and maybe spared

    def targets(self) -> Sequence[Route]:
        return (self.target, self.failover)
