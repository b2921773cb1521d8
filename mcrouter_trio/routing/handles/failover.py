"""Sequential failover: FailoverRoute and LatestRoute."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mcrouter_trio.hashing import weighted_ch3
from mcrouter_trio.messages import FAILOVER_ERRORS, Pending, Reply, Request
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._checks import check_int
from mcrouter_trio.routing._combinators import first_acceptable, sequence
from mcrouter_trio.routing._registry import config_field, route_type


def no_failover_error(reply: Reply) -> bool:
    return reply.result not in FAILOVER_ERRORS


def failover(children: Sequence[Route], request: Request, ctx: RouteContext, name: str) -> Pending:
    """Try children in order until a reply is not a failover-type error."""
    if not children:
        return Pending(default_reply(request))
    return first_acceptable(children, request, ctx, no_failover_error, name=name)


def failover_whole(
    children: Sequence[Route], request: Request, ctx: RouteContext, split: SplitRouting, name: str
) -> Pending | None:
    """A whole multi-get to the first child; on a failover-type error, the rest key by key.

    The rest are tried key by key (each key fails over on its own, as when the
    multi-get is split from the start), never the first child again.
    """
    if not children:
        return None
    first = children[0].route_whole(request, ctx, split)
    if first is None or len(children) == 1:
        return first
    rest = FailoverRoute(tuple(children[1:]))

    def after_first(reply: Reply) -> Reply | Pending:
        if no_failover_error(reply):
            return reply
        return split(rest, request)

    return sequence(first, after_first, name=name)


@route_type("FailoverRoute", shorthand="children")
@attrs.frozen
class FailoverRoute:
    """Sends to the first child; on a failover-type error, to the next one, and so on."""

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return failover(self.children, request, ctx, "FailoverRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return failover_whole(self.children, request, ctx, split, "FailoverRoute")

    def targets(self) -> Sequence[Route]:
        return self.children


def latest_order(
    count: int, host_id: int, failover_count: int, weights: tuple[float, ...], salt: str
) -> tuple[int, ...]:
    """The children this host uses, in failover order, chosen once from the host id.

    Every request from one proxy host goes to the same first server; different
    hosts spread over the children (mcrouter's LatestRoute intent, issue #127).
    """
    remaining = list(range(count))
    remaining_weights = [weights[i] if i < len(weights) else 1.0 for i in range(count)]
    order: list[int] = []
    for step in range(min(failover_count, count)):
        key = f"{host_id}-{step}{salt}".encode()
        picked = weighted_ch3(key, remaining_weights)
        order.append(remaining.pop(picked))
        remaining_weights.pop(picked)
    return tuple(order)


def _check_failover_count(value: object) -> int:
    return check_int(value, 1)


@route_type("LatestRoute", shorthand="children")
@attrs.frozen
class LatestRoute:
    """FailoverRoute over a per-host subset of up to `failover_count` children."""

    children: tuple[Route, ...]
    failover_count: int = config_field(default=5, check=_check_failover_count)
    weights: tuple[float, ...] = ()
    salt: str = ""
    #: This proxy host's id: the config cannot set it.
    host_id: int = config_field(default=0, from_build="host_id")
    _ordered: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        order = latest_order(
            len(self.children), self.host_id, self.failover_count, self.weights, self.salt
        )
        object.__setattr__(self, "_ordered", tuple(self.children[i] for i in order))

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return failover(self._ordered, request, ctx, "LatestRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return failover_whole(self._ordered, request, ctx, split, "LatestRoute")

    def targets(self) -> Sequence[Route]:
        return self._ordered
