"""Sequential failover: FailoverRoute and LatestRoute."""

from __future__ import annotations

import attrs

from mcrouter_trio.hashing import weighted_ch3
from mcrouter_trio.messages import FAILOVER_ERRORS, Pending, Reply, Request
from mcrouter_trio.routing._base import Route, RouteContext, default_reply


def failover(children: tuple[Route, ...], request: Request, ctx: RouteContext) -> Pending:
    """Try children in order until a reply is not a failover-type error."""
    if not children:
        return Pending(default_reply(request))
    out = Pending()

    def attempt(index: int) -> None:
        def on_reply(reply: Reply) -> None:
            if reply.result in FAILOVER_ERRORS and index + 1 < len(children):
                attempt(index + 1)
            else:
                out.resolve(reply)

        children[index].route(request, ctx).then(on_reply)

    attempt(0)
    return out


@attrs.frozen
class FailoverRoute:
    """Sends to the first child; on a failover-type error, to the next one, and so on."""

    children_: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return failover(self.children_, request, ctx)

    def children(self) -> list[Route]:
        return list(self.children_)


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


@attrs.frozen
class LatestRoute:
    """FailoverRoute over a per-host subset of up to `failover_count` children."""

    children_: tuple[Route, ...]
    failover_count: int = 5
    weights: tuple[float, ...] = ()
    salt: str = ""
    host_id: int = 0
    _ordered: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        order = latest_order(
            len(self.children_), self.host_id, self.failover_count, self.weights, self.salt
        )
        object.__setattr__(self, "_ordered", tuple(self.children_[i] for i in order))

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return failover(self._ordered, request, ctx)

    def children(self) -> list[Route]:
        return list(self._ordered)
