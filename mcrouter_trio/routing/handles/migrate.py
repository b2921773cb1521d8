"""MigrateRoute: move keys from one route to another over an interval of wall-clock time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from mcrouter_trio.hashing import routing_key
from mcrouter_trio.hashing._spooky import spooky_hash32
from mcrouter_trio.messages import META, Op, Pending, Request
from mcrouter_trio.protocol import meta_routing_key
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_int
from mcrouter_trio.routing._combinators import gather
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing.handles.broadcast import worst_reply

_NAME: Final = "MigrateRoute"
_DELETES: Final = frozenset({Op.DELETE, Op.MD})


def _not_a_config_key(value: object) -> Callable[[], float]:
    raise Invalid("the clock is not a config key")


def _check_interval(value: object) -> int:
    return check_int(value, 1)


@route_type(_NAME)
@attrs.frozen
class MigrateRoute:
    """Sends each key to `from` until its own switch time, then to `to` (mcrouter MigrateRoute).

    A key switches at `start_time + interval + SpookyHashV2-32(routing key) % interval`
    (unix seconds), so keys move one by one over `[start_time + interval,
    start_time + 2 * interval)`. Deletes go to `from` before `start_time`, to both
    (the worse reply) until `start_time + 2 * interval`, then to `to`: a key deleted
    during the migration is gone from both routes, whichever it is read from.

    Time is the wall clock, as in mcrouter: `start_time` is a date, the same for
    every proxy. `wall_clock` is not a config key; tests give their own clock.
    """

    from_: Route
    to: Route
    start_time: int = config_field(check=check_int)
    interval: int = config_field(default=3600, check=_check_interval)
    wall_clock: Callable[[], float] = config_field(default=time.time, check=_not_a_config_key)

    def switch_time(self, request: Request) -> int:
        """When this request's key moves from `from` to `to` (unix seconds)."""
        key = routing_key(meta_routing_key(request) if request.op in META else request.key)
        return self.start_time + self.interval + spooky_hash32(key) % self.interval

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        now = self.wall_clock()
        if request.op not in _DELETES:
            target = self.from_ if now < self.switch_time(request) else self.to
            return target.route(request, ctx)
        if now < self.start_time:
            return self.from_.route(request, ctx)
        if now >= self.start_time + 2 * self.interval:
            return self.to.route(request, ctx)
        both = (self.from_.route(request, ctx), self.to.route(request, ctx))
        return gather(both, worst_reply, name=_NAME)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key switches at its own time

    def targets(self) -> Sequence[Route]:
        return (self.from_, self.to)
